// tests/gpu/test_bwd_perf_intra.cu: hidden timing of the backward's two chunk-parallel intra-chunk
// kernels (bwd_cov_kernel, bwd_gla_kernel) at the benchmark shape: B = 8, T = 8192, H_q = H_kv = 16,
// D = 128, bf16 k / v / do, fp32 workspace (x, z, q~) and fp32 chunk states, bp_lambda on (16,384
// chunk programs each). Inputs are device-generated random values; results are not checked (the
// [bwd] tests do that). Prints "PERF| <kernel> <ms>" with the median of 15 launches after warm-up.
//   gka_gpu_tests "[perf]"
#include "common/catch.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gka/kernels/bwd_cov_kernel.cuh"
#include "gka/kernels/bwd_gla_kernel.cuh"

namespace {

#define PERF_OK(expr)                                                                  \
  do {                                                                                 \
    const cudaError_t e_ = (expr);                                                     \
    INFO(#expr << ": " << cudaGetErrorString(e_));                                     \
    REQUIRE(e_ == cudaSuccess);                                                        \
  } while (0)

struct PerfBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit PerfBuf(size_t n) : bytes(n) {
    if (cudaMalloc(&p, n) != cudaSuccess) p = nullptr;
  }
  PerfBuf(const PerfBuf&) = delete;
  PerfBuf& operator=(const PerfBuf&) = delete;
  ~PerfBuf() { if (p) cudaFree(p); }
};

__device__ inline float hash_uniform(uint64_t i, uint32_t seed) {  // in [-1, 1)
  uint64_t x = i * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return static_cast<float>(x >> 40) * (2.f / 16777216.f) - 1.f;
}
__global__ void fill_f32(float* p, int64_t n, uint32_t seed, float scale, float offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = offset + scale * hash_uniform(static_cast<uint64_t>(i), seed);
}
__global__ void fill_bf16(__nv_bfloat16* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = __float2bfloat16(scale * hash_uniform(static_cast<uint64_t>(i), seed));
}

template <class Launch>
float median_ms(Launch launch) {
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int i = 0; i < 3; ++i) launch();  // warm-up
  std::vector<float> ms;
  for (int i = 0; i < 15; ++i) {
    cudaEventRecord(e0);
    launch();
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t = 0.f;
    cudaEventElapsedTime(&t, e0, e1);
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

TEST_CASE("bwd intra-chunk kernels: time at the benchmark shape", "[.][perf]") {
  using gka::DType;
  using gka::TokenTensor;
  constexpr int D = 128, C = gka::kernels::kBwdCovChunk;
  static_assert(C == gka::kernels::kBwdGlaChunk, "one chunk geometry");
  const int64_t B = 8, T = 8192, H = 16, CB = B * (T / C), ntok = B * T * H;
  const size_t nstate = static_cast<size_t>(CB * H) * D * D;
  PerfBuf k(ntok * D * 2), v(ntok * D * 2), dO(ntok * D * 2), x(ntok * D * 4), z(ntok * D * 4), q(ntok * D * 4);
  PerfBuf dk(ntok * D * 4), dv(ntok * D * 4);
  PerfBuf gate(ntok * 4), w(ntok * 4), unu(ntok * 4), qdq(ntok * 4), dgs(ntok * 4), dg(ntok * 4);
  PerfBuf st0(nstate * 4), st1(nstate * 4), st2(nstate * 4);
  for (PerfBuf* bf : {&k, &v, &dO, &x, &z, &q, &dk, &dv, &gate, &w, &unu, &qdq, &dgs, &dg, &st0, &st1, &st2})
    REQUIRE(bf->p != nullptr);
  uint32_t seed = 1;
  for (PerfBuf* bf : {&k, &v, &dO}) fill_bf16<<<2048, 256>>>(static_cast<__nv_bfloat16*>(bf->p), ntok * D, seed++, 0.1f);
  for (PerfBuf* bf : {&x, &z, &q, &dk, &dv}) fill_f32<<<2048, 256>>>(static_cast<float*>(bf->p), ntok * D, seed++, 1.f, 0.f);
  fill_f32<<<2048, 256>>>(static_cast<float*>(gate.p), ntok, seed++, 0.02f, -0.03f);  // log-decays in (-0.05, -0.01)
  for (PerfBuf* bf : {&w, &unu, &qdq, &dgs}) fill_f32<<<2048, 256>>>(static_cast<float*>(bf->p), ntok, seed++, 0.1f, 0.f);
  for (PerfBuf* bf : {&st0, &st1, &st2})
    fill_f32<<<4096, 256>>>(static_cast<float*>(bf->p), static_cast<int64_t>(nstate), seed++, 0.1f, 0.f);
  PERF_OK(cudaDeviceSynchronize());

  gka::kernels::BackwardParams p;
  p.geo.batch = B;
  p.geo.seqlen = T;
  p.geo.chunk = C;
  p.geo.num_seqs = B;
  p.geo.chunk_bound = CB;
  p.heads_q = H;
  p.group = 1;
  p.k = TokenTensor::contiguous(k.p, DType::kBF16, T, H, D);
  p.v = TokenTensor::contiguous(v.p, DType::kBF16, T, H, D);
  p.d_o = TokenTensor::contiguous(dO.p, DType::kBF16, T, H, D);
  p.x = TokenTensor::contiguous(x.p, DType::kFP32, T, H, D);
  p.ws.z = TokenTensor::contiguous(z.p, DType::kFP32, T, H, D);
  p.ws.qmix = TokenTensor::contiguous(q.p, DType::kFP32, T, H, D);
  p.ws.dk = TokenTensor::contiguous(dk.p, DType::kFP32, T, H, D);
  p.ws.dv = TokenTensor::contiguous(dv.p, DType::kFP32, T, H, D);
  p.ws.w = TokenTensor::contiguous(w.p, DType::kFP32, T, H, 1);
  p.ws.unu = TokenTensor::contiguous(unu.p, DType::kFP32, T, H, 1);
  p.ws.qdq = TokenTensor::contiguous(qdq.p, DType::kFP32, T, H, 1);
  p.ws.dg_s = TokenTensor::contiguous(dgs.p, DType::kFP32, T, H, 1);
  p.gate_h = gka::gating::Gate{static_cast<const float*>(gate.p), T * H, H, 1};
  p.gate_s = p.gate_h;
  p.dg = TokenTensor::contiguous(dg.p, DType::kFP32, T, H, 1);
  p.f_given = false;
  p.bp_lambda = true;
  p.scale = 0.088f;
  p.states_h = st0.p;
  p.states_s = st0.p;
  p.ws.r_end = static_cast<float*>(st1.p);
  p.ws.b_end = static_cast<float*>(st2.p);
  p.ws.s_end = static_cast<float*>(st1.p);

  const dim3 grid(static_cast<unsigned>(CB), static_cast<unsigned>(H));
  constexpr int kCovSmem = gka::kernels::BwdCovSmem<D>::kBytes, kGlaSmem = gka::kernels::BwdGlaSmem<D>::kBytes;
  PERF_OK(cudaFuncSetAttribute(gka::kernels::bwd_cov_kernel<D, float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               kCovSmem));
  PERF_OK(cudaFuncSetAttribute(gka::kernels::bwd_gla_kernel<D, float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               kGlaSmem));
  const float cov = median_ms([&] {
    gka::kernels::bwd_cov_kernel<D, float><<<grid, gka::kernels::kBwdCovThreads, kCovSmem>>>(p);
  });
  PERF_OK(cudaGetLastError());
  const float gla = median_ms([&] {
    gka::kernels::bwd_gla_kernel<D, float><<<grid, gka::kernels::kBwdGlaThreads, kGlaSmem>>>(p);
  });
  PERF_OK(cudaGetLastError());
  PERF_OK(cudaDeviceSynchronize());
  std::printf("PERF| bwd_cov_kernel %.3f ms (B8 T8192 H16 D128, bf16 K, fp32 states, bp_lambda; %lld programs, "
              "%d threads, %d B smem)\n",
              cov, static_cast<long long>(CB * H), gka::kernels::kBwdCovThreads, kCovSmem);
  std::printf("PERF| bwd_gla_kernel %.3f ms (B8 T8192 H16 D128, bf16 k/v/do, fp32 states; %lld programs, "
              "%d threads, %d B smem)\n",
              gla, static_cast<long long>(CB * H), gka::kernels::kBwdGlaThreads, kGlaSmem);
  int cov_occ = 0, gla_occ = 0;  // resident CTAs per SM at the launch configuration
  PERF_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&cov_occ, gka::kernels::bwd_cov_kernel<D, float>,
                                                        gka::kernels::kBwdCovThreads, kCovSmem));
  PERF_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&gla_occ, gka::kernels::bwd_gla_kernel<D, float>,
                                                        gka::kernels::kBwdGlaThreads, kGlaSmem));
  std::printf("PERF| CTAs per SM: bwd_cov_kernel %d, bwd_gla_kernel %d\n", cov_occ, gla_occ);
  std::fflush(stdout);
}
