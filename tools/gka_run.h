// tools/gka_run.h: what gka-run's front end (gka_run.cpp) hands to a backend.
//
// The front end reads and checks the .npy inputs and builds a Problem: host arrays in C order, in
// the layouts of gka/args.h, already cast to the --dtype the user asked for. Each backend turns a
// Problem into named output arrays. The float64 reference lives in gka_run.cpp; the GPU backend
// lives in gka_run_gpu.cu (or gka_run_gpu_stub.cpp in a build without CUDA).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "gka/args.h"
#include "gka/numeric/host_convert.h"
#include "gka/status.h"
#include "gka/types.h"
#include "npy.h"

namespace gka {
namespace tools {

enum class RunMode { kForward, kBackward, kDecode };

inline const char* run_mode_name(RunMode m) {
  return m == RunMode::kForward ? "forward" : m == RunMode::kBackward ? "backward" : "decode";
}

struct RunConfig {
  RunMode mode = RunMode::kForward;
  SolverOptions options;     // num_iter, ridge_ratio, scale, chunk_size, l2norm_qk, fuse_beta
  bool bp_lambda = true;     // backward only
  bool exact_solve = false;  // reference only: Cholesky instead of Chebyshev
  bool chunked = false;      // reference only: the chunk-wise schedule (spec 3) instead of token by token
  int64_t pad_slot = -1;     // decode only
};

struct Problem {
  RunConfig cfg;
  // Sizes read off the inputs: q [B,T,Hq,D], k [B,T,Hkv,D]; N states (B, or sequences with
  // cu_seqlens); P pool slots (decode).
  int64_t B = 0, T = 0, Hq = 0, Hkv = 0, D = 0, N = 0, P = 0;
  std::map<std::string, NpyArray> in;  // by case name: q, k, v, alpha, g, f, beta, h0, s0, ...

  bool has(const std::string& name) const { return in.count(name) != 0; }
  const NpyArray& at(const std::string& name) const { return in.at(name); }
};

struct NamedArray {
  std::string name;
  NpyArray array;
};
using Outputs = std::vector<NamedArray>;

// ---- the GPU backend (gka_run_gpu.cu, or the stub without CUDA) -------------------------------

struct GpuProbe {
  bool usable = false;  // a CUDA device is visible and this build has GPU kernels
  std::string why;      // why not, or which device
};
GpuProbe gpu_probe();
// Whether the GPU API this build has can run `p` (mode, head dim, dtypes); `why` says why not.
bool gpu_supports(const Problem& p, std::string* why);
Result gpu_run(const Problem& p, Outputs* out);

// ---- dtype helpers shared by the front end and the backends -----------------------------------

inline bool npy_is_float(NpyType t) {
  return t == NpyType::kF64 || t == NpyType::kF32 || t == NpyType::kF16 || t == NpyType::kU16;
}
inline DType npy_to_dtype(NpyType t) {
  switch (t) {
    case NpyType::kF32: return DType::kFP32;
    case NpyType::kF16: return DType::kFP16;
    case NpyType::kU16: return DType::kBF16;
    default: return DType::kFP64;
  }
}
inline NpyType dtype_to_npy(DType t) {
  switch (t) {
    case DType::kFP32: return NpyType::kF32;
    case DType::kFP16: return NpyType::kF16;
    case DType::kBF16: return NpyType::kU16;
    case DType::kFP64: return NpyType::kF64;
  }
  return NpyType::kF64;
}

// A float array converted (rounded to nearest even) to another float type. Same shape.
inline NpyArray convert_float_array(const NpyArray& a, NpyType to) {
  NpyArray r = NpyArray::zeros(to, a.shape);
  const DType from_t = npy_to_dtype(a.type), to_t = npy_to_dtype(to);
  const int64_t n = a.size();
  for (int64_t i = 0; i < n; ++i) store_from_double(r.data(), to_t, i, load_as_double(a.data(), from_t, i));
  return r;
}

inline std::vector<double> to_double_vector(const NpyArray& a) {
  std::vector<double> r(static_cast<size_t>(a.size()));
  const DType t = npy_to_dtype(a.type);
  for (int64_t i = 0; i < a.size(); ++i) r[static_cast<size_t>(i)] = load_as_double(a.data(), t, i);
  return r;
}

}  // namespace tools
}  // namespace gka
