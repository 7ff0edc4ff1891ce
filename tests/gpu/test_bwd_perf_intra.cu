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

#include "common/device.h"
#include "common/perf.h"
#include "gka/kernels/bwd_cov_kernel.cuh"
#include "gka/kernels/bwd_gla_kernel.cuh"

namespace {

using gka_test::DevBuf;
using gka_test::fill_uniform;

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
  DevBuf k(ntok * D * 2), v(ntok * D * 2), dO(ntok * D * 2), x(ntok * D * 4), z(ntok * D * 4), q(ntok * D * 4);
  DevBuf dk(ntok * D * 4), dv(ntok * D * 4);
  DevBuf gate(ntok * 4), w(ntok * 4), unu(ntok * 4), qdq(ntok * 4), dgs(ntok * 4), dg(ntok * 4);
  DevBuf st0(nstate * 4), st1(nstate * 4), st2(nstate * 4);
  for (DevBuf* bf : {&k, &v, &dO, &x, &z, &q, &dk, &dv, &gate, &w, &unu, &qdq, &dgs, &dg, &st0, &st1, &st2})
    REQUIRE(bf->p != nullptr);
  uint64_t seed = 1;
  for (DevBuf* bf : {&k, &v, &dO}) fill_uniform<__nv_bfloat16>(bf->p, ntok * D, -0.1f, 0.1f, seed++);
  for (DevBuf* bf : {&x, &z, &q, &dk, &dv}) fill_uniform<float>(bf->p, ntok * D, -1.f, 1.f, seed++);
  fill_uniform<float>(gate.p, ntok, -0.05f, -0.01f, seed++);  // log-decays in (-0.05, -0.01)
  for (DevBuf* bf : {&w, &unu, &qdq, &dgs}) fill_uniform<float>(bf->p, ntok, -0.1f, 0.1f, seed++);
  for (DevBuf* bf : {&st0, &st1, &st2}) fill_uniform<float>(bf->p, nstate, -0.1f, 0.1f, seed++);
  CUDA_OK(cudaDeviceSynchronize());

  gka::kernels::BackwardParams p;
  gka_test::dense_geometry(p, B, T, C, H);
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
  CUDA_OK(cudaFuncSetAttribute(gka::kernels::bwd_cov_kernel<D, float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               kCovSmem));
  CUDA_OK(cudaFuncSetAttribute(gka::kernels::bwd_gla_kernel<D, float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               kGlaSmem));
  const float cov = median_ms([&] {
    gka::kernels::bwd_cov_kernel<D, float><<<grid, gka::kernels::kBwdCovThreads, kCovSmem>>>(p);
  });
  CUDA_OK(cudaGetLastError());
  const float gla = median_ms([&] {
    gka::kernels::bwd_gla_kernel<D, float><<<grid, gka::kernels::kBwdGlaThreads, kGlaSmem>>>(p);
  });
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  std::printf("PERF| bwd_cov_kernel %.3f ms (B8 T8192 H16 D128, bf16 K, fp32 states, bp_lambda; %lld programs, "
              "%d threads, %d B smem)\n",
              cov, static_cast<long long>(CB * H), gka::kernels::kBwdCovThreads, kCovSmem);
  std::printf("PERF| bwd_gla_kernel %.3f ms (B8 T8192 H16 D128, bf16 k/v/do, fp32 states; %lld programs, "
              "%d threads, %d B smem)\n",
              gla, static_cast<long long>(CB * H), gka::kernels::kBwdGlaThreads, kGlaSmem);
  int cov_occ = 0, gla_occ = 0;  // resident CTAs per SM at the launch configuration
  CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&cov_occ, gka::kernels::bwd_cov_kernel<D, float>,
                                                        gka::kernels::kBwdCovThreads, kCovSmem));
  CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&gla_occ, gka::kernels::bwd_gla_kernel<D, float>,
                                                        gka::kernels::kBwdGlaThreads, kGlaSmem));
  std::printf("PERF| CTAs per SM: bwd_cov_kernel %d, bwd_gla_kernel %d\n", cov_occ, gla_occ);
  std::fflush(stdout);
}
