// tests/gpu/main.cu: Catch2 runner of the GPU tests. Without a visible CUDA device it prints a
// visible SKIPPED line and exits 77, which CTest reports as "Skipped".
#define CATCH_CONFIG_RUNNER
#include "common/catch.h"

#include <cstdio>
#include <cuda_runtime.h>

int main(int argc, char** argv) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    Catch::Session session;
    session.applyCommandLine(argc, argv);
    const int n = static_cast<int>(Catch::getAllTestCasesSorted(session.config()).size());
    std::printf("SKIPPED: no CUDA device visible (%s) - %d GPU tests not run\n",
                e == cudaSuccess ? "0 devices" : cudaGetErrorString(e), n);
    return 77;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    std::printf("GPU: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  return Catch::Session().run(argc, argv);
}
