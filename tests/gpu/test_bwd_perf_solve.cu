// tests/gpu/test_bwd_perf_solve.cu: hidden timing of bwd_solve_kernel (tag [.][perf][bsolve]) at the
// benchmark shape: B = 8, T = 8192, H = 16, D = 128, bf16 q / k / v / do / dq / alpha, fp32 x / nu /
// workspace rows, fp32 chunk states, r = 30, bp_lambda on. Random inputs (nu > 0), no reference
// (correctness: test_bwd_solve.cu). Median of 7 launches after 2 warm-ups, CUDA events; prints
// "PERF| bwd_solve ms". The forward's solve_readout_kernel is timed the same way (tag
// [.][perf][fsolve]), with and without x and nu saved: "PERF| fwd_solve ms".
#include "common/catch.h"

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gka/kernels/bwd_solve_kernel.cuh"

namespace {

#define PERF_CUDA_OK(expr)                                                             \
  do {                                                                                 \
    const cudaError_t e_ = (expr);                                                     \
    INFO(#expr << ": " << cudaGetErrorString(e_));                                     \
    REQUIRE(e_ == cudaSuccess);                                                        \
  } while (0)

// n values uniform in [lo, hi) as T (float or bf16), on the device (hash of the index and seed)
template <class T>
__global__ void fill_kernel(T* d, size_t n, float lo, float hi, uint64_t seed) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    const float u = static_cast<float>(x >> 40) * (1.f / 16777216.f);
    d[i] = static_cast<T>(lo + (hi - lo) * u);
  }
}
template <class T>
void* fill(size_t n, float lo, float hi, uint64_t seed, std::vector<void*>& owned) {
  void* d = nullptr;
  if (cudaMalloc(&d, n * sizeof(T)) != cudaSuccess) return nullptr;
  fill_kernel<T><<<1024, 256>>>(static_cast<T*>(d), n, lo, hi, seed);
  owned.push_back(d);
  return d;
}

void time_bwd_solve(int64_t B, int64_t T) {
  using namespace gka;
  constexpr int D = 128;
  constexpr int64_t H = 16, C = 64;
  const int64_t BT = B * T, nchunks = B * ((T + C - 1) / C);
  std::vector<void*> owned;
  kernels::BackwardParams p;
  p.geo.batch = B;
  p.geo.seqlen = T;
  p.geo.chunk = C;
  p.geo.num_seqs = B;
  p.geo.chunk_bound = nchunks;
  p.heads_q = H;
  p.group = 1;
  const DType bf = DType::kBF16, f32 = DType::kFP32;
  p.q = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, -0.1f, 0.1f, 1, owned), bf, T, H, D);
  p.k = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, -0.1f, 0.1f, 2, owned), bf, T, H, D);
  p.v = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, -1.f, 1.f, 3, owned), bf, T, H, D);
  p.alpha = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H, 0.f, 1.f, 4, owned), bf, T, H, 1);
  p.d_o = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, -1.f, 1.f, 5, owned), bf, T, H, D);
  p.x = TokenTensor::contiguous(fill<float>(BT * H * D, -1.f, 1.f, 6, owned), f32, T, H, D);
  p.nu = TokenTensor::contiguous(fill<float>(BT * H, 0.5f, 2.f, 7, owned), f32, T, H, 1);
  const float* gf = static_cast<const float*>(fill<float>(BT * H, -0.1f, 0.f, 8, owned));
  const float* gs = static_cast<const float*>(fill<float>(BT * H, -0.1f, 0.f, 9, owned));
  p.gate_h = gating::Gate{gf, T * H, H, 1};
  p.gate_s = gating::Gate{gs, T * H, H, 1};
  p.f_given = true;
  p.num_iter = 30;
  p.ridge = 0.02f;
  p.scale = 0.088f;
  p.bp_lambda = true;
  p.states_h = fill<float>(nchunks * H * D * D, -0.01f, 0.01f, 10, owned);
  p.states_s = fill<float>(nchunks * H * D * D, -1.f, 1.f, 11, owned);
  p.dq = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, 0.f, 0.f, 12, owned), bf, T, H, D);
  p.dalpha = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H, 0.f, 0.f, 13, owned), bf, T, H, 1);
  p.ws.z = TokenTensor::contiguous(fill<float>(BT * H * D, 0.f, 0.f, 14, owned), f32, T, H, D);
  p.ws.qmix = TokenTensor::contiguous(fill<float>(BT * H * D, 0.f, 0.f, 15, owned), f32, T, H, D);
  p.ws.qdq = TokenTensor::contiguous(fill<float>(BT * H, 0.f, 0.f, 16, owned), f32, T, H, 1);
  p.ws.w = TokenTensor::contiguous(fill<float>(BT * H, 0.f, 0.f, 17, owned), f32, T, H, 1);
  p.ws.unu = TokenTensor::contiguous(fill<float>(BT * H, 0.f, 0.f, 18, owned), f32, T, H, 1);
  for (void* o : owned) REQUIRE(o != nullptr);

  using Smem = kernels::BwdSolveSmem<D, false>;
  auto kern = kernels::bwd_solve_kernel<D, false, float>;
  PERF_CUDA_OK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::kBytes));
  cudaFuncAttributes fa{};
  PERF_CUDA_OK(cudaFuncGetAttributes(&fa, kern));
  int blocks = 0;
  PERF_CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kern, kernels::kBwdSolveThreads, Smem::kBytes));
  cudaEvent_t e0, e1;
  PERF_CUDA_OK(cudaEventCreate(&e0));
  PERF_CUDA_OK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int it = 0; it < 9; ++it) {
    PERF_CUDA_OK(cudaEventRecord(e0));
    kern<<<dim3(static_cast<unsigned>(nchunks), static_cast<unsigned>(H)), kernels::kBwdSolveThreads, Smem::kBytes>>>(p);
    PERF_CUDA_OK(cudaEventRecord(e1));
    PERF_CUDA_OK(cudaEventSynchronize(e1));
    PERF_CUDA_OK(cudaGetLastError());
    float t = 0.f;
    PERF_CUDA_OK(cudaEventElapsedTime(&t, e0, e1));
    if (it >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  std::printf("PERF| bwd_solve T=%lld B=%lld ms=%.3f (min %.3f max %.3f) smem=%d regs=%d local=%d ctas/sm=%d\n",
              static_cast<long long>(T), static_cast<long long>(B), ms[ms.size() / 2], ms.front(), ms.back(),
              Smem::kBytes, fa.numRegs, static_cast<int>(fa.localSizeBytes), blocks);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  for (void* o : owned) cudaFree(o);
}

void time_fwd_solve(int64_t B, int64_t T, bool save_x) {
  using namespace gka;
  constexpr int D = 128;
  constexpr int64_t H = 16, C = 64;
  const int64_t BT = B * T, nchunks = B * ((T + C - 1) / C);
  std::vector<void*> owned;
  kernels::SolveReadoutParams p;
  p.geo.batch = B;
  p.geo.seqlen = T;
  p.geo.chunk = C;
  p.geo.num_seqs = B;
  p.geo.chunk_bound = nchunks;
  p.heads_q = H;
  p.group = 1;
  const DType bf = DType::kBF16, f32 = DType::kFP32;
  p.q = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, -0.1f, 0.1f, 1, owned), bf, T, H, D);
  p.k = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, -0.1f, 0.1f, 2, owned), bf, T, H, D);
  p.v = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, -1.f, 1.f, 3, owned), bf, T, H, D);
  p.alpha = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H, 0.f, 1.f, 4, owned), bf, T, H, 1);
  const float* gf = static_cast<const float*>(fill<float>(BT * H, -0.1f, 0.f, 8, owned));
  const float* gs = static_cast<const float*>(fill<float>(BT * H, -0.1f, 0.f, 9, owned));
  p.gate_h = gating::Gate{gf, T * H, H, 1};
  p.gate_s = gating::Gate{gs, T * H, H, 1};
  p.num_iter = 30;
  p.ridge = 0.02f;
  p.scale = 0.088f;
  p.states_h = fill<float>(nchunks * H * D * D, -0.01f, 0.01f, 10, owned);
  p.states_s = fill<float>(nchunks * H * D * D, -1.f, 1.f, 11, owned);
  p.o = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, 0.f, 0.f, 12, owned), bf, T, H, D);
  if (save_x) {
    p.x = TokenTensor::contiguous(fill<float>(BT * H * D, 0.f, 0.f, 13, owned), f32, T, H, D);
    p.nu = TokenTensor::contiguous(fill<float>(BT * H, 0.f, 0.f, 14, owned), f32, T, H, 1);
  }
  for (void* o : owned) REQUIRE(o != nullptr);

  using Smem = kernels::SolveSmem<D, false>;
  auto kern = kernels::solve_readout_kernel<D, false, float>;
  PERF_CUDA_OK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::kBytes));
  cudaEvent_t e0, e1;
  PERF_CUDA_OK(cudaEventCreate(&e0));
  PERF_CUDA_OK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int it = 0; it < 9; ++it) {
    PERF_CUDA_OK(cudaEventRecord(e0));
    kern<<<dim3(static_cast<unsigned>(nchunks), static_cast<unsigned>(H)), kernels::kSolveThreads, Smem::kBytes>>>(p);
    PERF_CUDA_OK(cudaEventRecord(e1));
    PERF_CUDA_OK(cudaEventSynchronize(e1));
    PERF_CUDA_OK(cudaGetLastError());
    float t = 0.f;
    PERF_CUDA_OK(cudaEventElapsedTime(&t, e0, e1));
    if (it >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  std::printf("PERF| fwd_solve T=%lld B=%lld save_x=%d ms=%.3f (min %.3f max %.3f)\n", static_cast<long long>(T),
              static_cast<long long>(B), save_x ? 1 : 0, ms[ms.size() / 2], ms.front(), ms.back());
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  for (void* o : owned) cudaFree(o);
}

}  // namespace

TEST_CASE("fwd solve-readout timing at the benchmark shape", "[.][perf][fsolve]") {
  time_fwd_solve(8, 8192, false);
  time_fwd_solve(8, 8192, true);
}

TEST_CASE("bwd solve timing at the benchmark shape", "[.][perf][bsolve]") { time_bwd_solve(8, 8192); }
