// tools/gka_run_gpu_stub.cpp: gka-run's GPU backend in a build without CUDA (always unavailable).
#include "gka_run.h"

namespace gka {
namespace tools {

GpuProbe gpu_probe() {
  GpuProbe p;
  p.why = "this build has no CUDA (configure with a CUDA toolkit and GKA_ENABLE_CUDA=ON)";
  return p;
}

bool gpu_supports(const Problem&, std::string* why) {
  *why = "this build has no CUDA";
  return false;
}

Result gpu_run(const Problem&, Outputs*) {
  return Result(Status::kErrorNotSupported, "GPU backend not available: this build has no CUDA");
}

}  // namespace tools
}  // namespace gka
