// tests/gpu/test_bwd_perf_rscan.cu: hidden timing of bwd_reverse_scan_kernel (tag [.][perf]) at the
// benchmark shapes: 65,536 tokens x 16 heads, D = 128, T = 2048 (B = 32), 8192 (B = 8), 32768 (B = 2);
// bf16 k / do, fp32 z / q~ / x / w (the workspace dtypes), fp32 chunk states, bp_lambda on. Random
// inputs, no reference (correctness: test_bwd_scan_gla.cu). Median of 7 launches after 2 warm-ups,
// CUDA events; prints "PERF| rscan T=... ms".
#include "common/catch.h"

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gka/kernels/bwd_reverse_scan_kernel.cuh"

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

void time_rscan(int64_t B, int64_t T) {
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
  p.k = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, -0.1f, 0.1f, 1, owned), bf, T, H, D);
  p.d_o = TokenTensor::contiguous(fill<__nv_bfloat16>(BT * H * D, -1.f, 1.f, 2, owned), bf, T, H, D);
  p.x = TokenTensor::contiguous(fill<float>(BT * H * D, -1.f, 1.f, 3, owned), f32, T, H, D);
  p.ws.z = TokenTensor::contiguous(fill<float>(BT * H * D, -1.f, 1.f, 4, owned), f32, T, H, D);
  p.ws.qmix = TokenTensor::contiguous(fill<float>(BT * H * D, -1.f, 1.f, 5, owned), f32, T, H, D);
  p.ws.w = TokenTensor::contiguous(fill<float>(BT * H, -1.f, 1.f, 6, owned), f32, T, H, 1);
  const float* gf = static_cast<const float*>(fill<float>(BT * H, -0.1f, 0.f, 7, owned));
  const float* gs = static_cast<const float*>(fill<float>(BT * H, -0.1f, 0.f, 8, owned));
  p.gate_h = gating::Gate{gf, T * H, H, 1};
  p.gate_s = gating::Gate{gs, T * H, H, 1};
  p.f_given = true;
  p.scale = 0.088f;
  p.bp_lambda = true;
  p.states_h = fill<float>(nchunks * H * D * D, -1.f, 1.f, 9, owned);
  p.states_s = p.states_h;
  const size_t chunk_bytes = static_cast<size_t>(nchunks) * H * D * D * 4, seq_bytes = static_cast<size_t>(B) * H * D * D * 4;
  float* outs[6] = {};
  for (int i = 0; i < 6; ++i) {
    PERF_CUDA_OK(cudaMalloc(&outs[i], i < 3 ? chunk_bytes : seq_bytes));
    owned.push_back(outs[i]);
  }
  p.ws.r_end = outs[0];
  p.ws.s_end = outs[1];
  p.ws.b_end = outs[2];
  p.ws.r_first = outs[3];
  p.ws.s_first = outs[4];
  p.ws.b_total = outs[5];
  for (void* o : owned) REQUIRE(o != nullptr);

  using RSmem = kernels::RscanSmem<D>;
  PERF_CUDA_OK(cudaFuncSetAttribute(kernels::bwd_reverse_scan_kernel<D, float>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, RSmem::kBytes));
  cudaEvent_t e0, e1;
  PERF_CUDA_OK(cudaEventCreate(&e0));
  PERF_CUDA_OK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int it = 0; it < 9; ++it) {
    PERF_CUDA_OK(cudaEventRecord(e0));
    kernels::bwd_reverse_scan_kernel<D, float>
        <<<dim3(static_cast<unsigned>(B * H), 3, D / 64), kernels::kRscanThreads, RSmem::kBytes>>>(p);
    PERF_CUDA_OK(cudaEventRecord(e1));
    PERF_CUDA_OK(cudaEventSynchronize(e1));
    PERF_CUDA_OK(cudaGetLastError());
    float t = 0.f;
    PERF_CUDA_OK(cudaEventElapsedTime(&t, e0, e1));
    if (it >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  std::printf("PERF| rscan T=%lld B=%lld ms=%.3f (min %.3f max %.3f) smem=%d\n", static_cast<long long>(T),
              static_cast<long long>(B), ms[ms.size() / 2], ms.front(), ms.back(), RSmem::kBytes);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  for (void* o : owned) cudaFree(o);
}

}  // namespace

TEST_CASE("bwd reverse scan timing at the benchmark shapes", "[.][perf][rscan]") {
  time_rscan(32, 2048);
  time_rscan(8, 8192);
  time_rscan(2, 32768);
}
