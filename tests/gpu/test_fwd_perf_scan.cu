// tests/gpu/test_fwd_perf_scan.cu: hidden timing of the forward's bf16 chunk-state scan (tag
// [.][perf][fscan]): scan_decays_kernel once, then state_scan_mma_kernel (64- and 32-row state tiles,
// bf16 chunk states) at the benchmark shapes, 65,536 tokens x 16 heads, D = 128, T = 2048 (B = 32),
// 8192 (B = 8), 32768 (B = 2). Random inputs, no reference (correctness: test_forward.cu). Median of 7
// launches after 2 warm-ups, CUDA events; prints "PERF| fscan T=... rows=... ms".
#include "common/catch.h"

#include <cstdio>
#include <cstdint>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/device.h"
#include "common/perf.h"
#include "gka/kernels/state_scan_kernel.cuh"

namespace {

using gka_test::DevBufs;
using gka_test::event_times_ms;

template <int kRows>
void time_scan(const gka::kernels::StateScanParams& p, int64_t B, int64_t T) {
  using namespace gka;
  constexpr int D = 128;
  auto kern = kernels::state_scan_mma_kernel<D, kRows, __nv_bfloat16>;
  const int smem = kernels::ScanMmaSmem<D, kRows>::kBytes;
  CUDA_OK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const std::vector<float> ms = event_times_ms([&] {
    kern<<<dim3(static_cast<unsigned>(B * p.heads_q), 2, D / kRows), kernels::kScanThreads, smem>>>(p);
  });
  std::printf("PERF| fscan T=%lld B=%lld rows=%d ms=%.3f (min %.3f max %.3f)\n", static_cast<long long>(T),
              static_cast<long long>(B), kRows, ms[ms.size() / 2], ms.front(), ms.back());
}

void time_fscan(int64_t B, int64_t T) {
  using namespace gka;
  constexpr int D = 128;
  constexpr int64_t H = 16, C = 64;
  const int64_t BT = B * T, nchunks = B * ((T + C - 1) / C);
  DevBufs in;
  kernels::StateScanParams p;
  gka_test::dense_geometry(p, B, T, C, H);
  const DType bf = DType::kBF16;
  p.k = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H * D, -0.1f, 0.1f, 1), bf, T, H, D);
  p.v = TokenTensor::contiguous(in.uniform<__nv_bfloat16>(BT * H * D, -1.f, 1.f, 2), bf, T, H, D);
  p.gate_h = gating::Gate{static_cast<const float*>(in.uniform<float>(BT * H, -0.1f, 0.f, 3)), T * H, H, 1};
  p.gate_s = gating::Gate{static_cast<const float*>(in.uniform<float>(BT * H, -0.1f, 0.f, 4)), T * H, H, 1};
  p.states_h = in.alloc(static_cast<size_t>(nchunks) * H * D * D * 2);
  p.states_s = in.alloc(static_cast<size_t>(nchunks) * H * D * D * 2);
  p.decays = static_cast<float*>(in.alloc(static_cast<size_t>(nchunks) * H * 2 * kernels::kScanDecayRow * 4));
  REQUIRE(in.all_allocated());
  kernels::scan_decays_kernel<><<<dim3(static_cast<unsigned>(nchunks), static_cast<unsigned>(H)),
                                  kernels::kScanDecayThreads>>>(p);
  CUDA_OK(cudaGetLastError());
  time_scan<64>(p, B, T);
  time_scan<32>(p, B, T);
}

}  // namespace

TEST_CASE("fwd bf16 chunk-state scan timing at the benchmark shapes", "[.][perf][fscan]") {
  time_fscan(32, 2048);
  time_fscan(8, 8192);
  time_fscan(2, 32768);
}
