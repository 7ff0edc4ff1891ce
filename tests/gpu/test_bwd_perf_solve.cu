// tests/gpu/test_bwd_perf_solve.cu: hidden timing of bwd_solve_kernel (tag [.][perf][bsolve]) at the
// benchmark shape: B = 8, T = 8192, H = 16, D = 128, bf16 q / k / v / do / dq / alpha, fp32 x / nu /
// workspace rows, fp32 chunk states, r = 30, bp_lambda on. Random inputs (nu > 0), no reference
// (correctness: test_bwd_solve.cu). Median of 7 launches after 2 warm-ups, CUDA events; prints
// "PERF| bwd_solve ms". The forward's solve_readout_kernel is timed the same way (tag
// [.][perf][fsolve]), with and without x and nu saved: "PERF| fwd_solve ms".
#include "common/catch.h"

#include <cstdio>
#include <cstdint>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/device.h"
#include "common/perf.h"
#include "gka/kernels/bwd_solve_kernel.cuh"

namespace {

using gka_test::DevBufs;
using gka_test::dense_geometry;
using gka_test::event_times_ms;

constexpr int D = 128;
constexpr int64_t H = 16, C = 64;
constexpr gka::DType bf = gka::DType::kBF16, f32 = gka::DType::kFP32;

// What both solve kernels read, for B sequences of T tokens: the geometry, bf16 q / k / v / alpha,
// fp32 gates g and f, fp32 chunk states (H-bar small), r = 30, ridge 0.02 (seeds 1-4, 8-11).
template <class Params>
void solve_inputs(Params& p, DevBufs& in, int64_t B, int64_t T) {
  using namespace gka;
  const int64_t BT = B * T, nchunks = B * ((T + C - 1) / C);
  dense_geometry(p, B, T, C, H);
  p.q = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H * D, -0.1f, 0.1f, 1), bf, T, H, D);
  p.k = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H * D, -0.1f, 0.1f, 2), bf, T, H, D);
  p.v = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H * D, -1.f, 1.f, 3), bf, T, H, D);
  p.alpha = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H, 0.f, 1.f, 4), bf, T, H, 1);
  const float* gf = static_cast<const float*>(in.uniform<float>(BT * H, -0.1f, 0.f, 8));
  const float* gs = static_cast<const float*>(in.uniform<float>(BT * H, -0.1f, 0.f, 9));
  p.gate_h = gating::Gate{gf, T * H, H, 1};
  p.gate_s = gating::Gate{gs, T * H, H, 1};
  p.num_iter = 30;
  p.ridge = 0.02f;
  p.scale = 0.088f;
  p.states_h = in.uniform<float>(nchunks * H * D * D, -0.01f, 0.01f, 10);
  p.states_s = in.uniform<float>(nchunks * H * D * D, -1.f, 1.f, 11);
}

void time_bwd_solve(int64_t B, int64_t T) {
  using namespace gka;
  const int64_t BT = B * T, nchunks = B * ((T + C - 1) / C);
  DevBufs in;
  kernels::BackwardParams p;
  solve_inputs(p, in, B, T);
  p.d_o = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H * D, -1.f, 1.f, 5), bf, T, H, D);
  p.x = TokenTensor::contiguous(in.uniform<float>(BT * H * D, -1.f, 1.f, 6), f32, T, H, D);
  p.nu = TokenTensor::contiguous(in.uniform<float>(BT * H, 0.5f, 2.f, 7), f32, T, H, 1);
  p.f_given = true;
  p.bp_lambda = true;
  p.dq = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H * D, 0.f, 0.f, 12), bf, T, H, D);
  p.dalpha = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H, 0.f, 0.f, 13), bf, T, H, 1);
  p.ws.z = TokenTensor::contiguous(in.uniform<float>(BT * H * D, 0.f, 0.f, 14), f32, T, H, D);
  p.ws.qmix = TokenTensor::contiguous(in.uniform<float>(BT * H * D, 0.f, 0.f, 15), f32, T, H, D);
  p.ws.qdq = TokenTensor::contiguous(in.uniform<float>(BT * H, 0.f, 0.f, 16), f32, T, H, 1);
  p.ws.w = TokenTensor::contiguous(in.uniform<float>(BT * H, 0.f, 0.f, 17), f32, T, H, 1);
  p.ws.unu = TokenTensor::contiguous(in.uniform<float>(BT * H, 0.f, 0.f, 18), f32, T, H, 1);
  REQUIRE(in.all_allocated());

  using Smem = kernels::BwdSolveSmem<D, false>;
  auto kern = kernels::bwd_solve_kernel<D, false, float>;
  CUDA_OK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::kBytes));
  cudaFuncAttributes fa{};
  CUDA_OK(cudaFuncGetAttributes(&fa, kern));
  int blocks = 0;
  CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kern, kernels::kBwdSolveThreads, Smem::kBytes));
  const std::vector<float> ms = event_times_ms([&] {
    kern<<<dim3(static_cast<unsigned>(nchunks), static_cast<unsigned>(H)), kernels::kBwdSolveThreads, Smem::kBytes>>>(p);
  });
  std::printf("PERF| bwd_solve T=%lld B=%lld ms=%.3f (min %.3f max %.3f) smem=%d regs=%d local=%d ctas/sm=%d\n",
              static_cast<long long>(T), static_cast<long long>(B), ms[ms.size() / 2], ms.front(), ms.back(),
              Smem::kBytes, fa.numRegs, static_cast<int>(fa.localSizeBytes), blocks);
}

void time_fwd_solve(int64_t B, int64_t T, bool save_x) {
  using namespace gka;
  const int64_t BT = B * T, nchunks = B * ((T + C - 1) / C);
  DevBufs in;
  kernels::SolveReadoutParams p;
  solve_inputs(p, in, B, T);
  p.o = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H * D, 0.f, 0.f, 12), bf, T, H, D);
  if (save_x) {
    p.x = TokenTensor::contiguous(in.uniform<float>(BT * H * D, 0.f, 0.f, 13), f32, T, H, D);
    p.nu = TokenTensor::contiguous(in.uniform<float>(BT * H, 0.f, 0.f, 14), f32, T, H, 1);
  }
  REQUIRE(in.all_allocated());

  using Smem = kernels::SolveSmem<D, false>;
  auto kern = kernels::solve_readout_kernel<D, false, float>;
  CUDA_OK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::kBytes));
  const std::vector<float> ms = event_times_ms([&] {
    kern<<<dim3(static_cast<unsigned>(nchunks), static_cast<unsigned>(H)), kernels::kSolveThreads, Smem::kBytes>>>(p);
  });
  std::printf("PERF| fwd_solve T=%lld B=%lld save_x=%d ms=%.3f (min %.3f max %.3f)\n", static_cast<long long>(T),
              static_cast<long long>(B), save_x ? 1 : 0, ms[ms.size() / 2], ms.front(), ms.back());
}

}  // namespace

TEST_CASE("fwd solve-readout timing at the benchmark shape", "[.][perf][fsolve]") {
  time_fwd_solve(8, 8192, false);
  time_fwd_solve(8, 8192, true);
}

TEST_CASE("bwd solve timing at the benchmark shape", "[.][perf][bsolve]") { time_bwd_solve(8, 8192); }
