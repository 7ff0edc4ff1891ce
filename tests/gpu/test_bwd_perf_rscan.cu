// tests/gpu/test_bwd_perf_rscan.cu: hidden timing of bwd_reverse_scan_kernel (tag [.][perf]) at the
// benchmark shapes: 65,536 tokens x 16 heads, D = 128, T = 2048 (B = 32), 8192 (B = 8), 32768 (B = 2);
// bf16 k / do, fp32 z / q~ / x / w (the workspace dtypes), fp32 chunk states, bp_lambda on. Random
// inputs, no reference (correctness: test_bwd_scan_gla.cu). Median of 7 launches after 2 warm-ups,
// CUDA events; prints "PERF| rscan T=... ms".
#include "common/catch.h"

#include <cstdio>
#include <cstdint>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/device.h"
#include "common/perf.h"
#include "gka/kernels/bwd_reverse_scan_kernel.cuh"

namespace {

using gka_test::DevBufs;
using gka_test::dense_geometry;
using gka_test::event_times_ms;

void time_rscan(int64_t B, int64_t T) {
  using namespace gka;
  constexpr int D = 128;
  constexpr int64_t H = 16, C = 64;
  const int64_t BT = B * T, nchunks = B * ((T + C - 1) / C);
  DevBufs in;
  kernels::BackwardParams p;
  dense_geometry(p, B, T, C, H);
  const DType bf = DType::kBF16, f32 = DType::kFP32;
  p.k = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H * D, -0.1f, 0.1f, 1), bf, T, H, D);
  p.d_o = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H * D, -1.f, 1.f, 2), bf, T, H, D);
  p.x = TokenTensor::contiguous(in.uniform<float>(BT * H * D, -1.f, 1.f, 3), f32, T, H, D);
  p.ws.z = TokenTensor::contiguous(in.uniform<float>(BT * H * D, -1.f, 1.f, 4), f32, T, H, D);
  p.ws.qmix = TokenTensor::contiguous(in.uniform<float>(BT * H * D, -1.f, 1.f, 5), f32, T, H, D);
  p.ws.w = TokenTensor::contiguous(in.uniform<float>(BT * H, -1.f, 1.f, 6), f32, T, H, 1);
  const float* gf = static_cast<const float*>(in.uniform<float>(BT * H, -0.1f, 0.f, 7));
  const float* gs = static_cast<const float*>(in.uniform<float>(BT * H, -0.1f, 0.f, 8));
  p.gate_h = gating::Gate{gf, T * H, H, 1};
  p.gate_s = gating::Gate{gs, T * H, H, 1};
  p.f_given = true;
  p.scale = 0.088f;
  p.bp_lambda = true;
  p.states_h = in.uniform<float>(nchunks * H * D * D, -1.f, 1.f, 9);
  p.states_s = p.states_h;
  const size_t chunk_bytes = static_cast<size_t>(nchunks) * H * D * D * 4, seq_bytes = static_cast<size_t>(B) * H * D * D * 4;
  float* outs[6] = {};
  for (int i = 0; i < 6; ++i) outs[i] = static_cast<float*>(in.alloc(i < 3 ? chunk_bytes : seq_bytes));
  p.ws.r_end = outs[0];
  p.ws.s_end = outs[1];
  p.ws.b_end = outs[2];
  p.ws.r_first = outs[3];
  p.ws.s_first = outs[4];
  p.ws.b_total = outs[5];
  p.ws.scan_wts = static_cast<float*>(in.alloc(static_cast<size_t>(nchunks) * H * 3 * kernels::kRscanWts * 4));
  REQUIRE(in.all_allocated());

  using RSmem = kernels::RscanSmem<D>;
  CUDA_OK(cudaFuncSetAttribute(kernels::bwd_reverse_scan_kernel<D, float>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, RSmem::kBytes));
  // the weights pass once (its own time is not part of the scan's)
  kernels::bwd_scan_weights_kernel<><<<dim3(static_cast<unsigned>(nchunks), static_cast<unsigned>(H)),
                                     kernels::kScanWeightsThreads>>>(p);
  CUDA_OK(cudaGetLastError());
  const std::vector<float> ms = event_times_ms([&] {
    kernels::bwd_reverse_scan_kernel<D, float>
        <<<dim3(static_cast<unsigned>(B * H), 3, D / 64), kernels::kRscanThreads, RSmem::kBytes>>>(p);
  });
  std::printf("PERF| rscan T=%lld B=%lld ms=%.3f (min %.3f max %.3f) smem=%d\n", static_cast<long long>(T),
              static_cast<long long>(B), ms[ms.size() / 2], ms.front(), ms.back(), RSmem::kBytes);
}

}  // namespace

TEST_CASE("bwd reverse scan timing at the benchmark shapes", "[.][perf][rscan]") {
  time_rscan(32, 2048);
  time_rscan(8, 8192);
  time_rscan(2, 32768);
}
