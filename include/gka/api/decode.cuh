// gka/api/decode.cuh: the decode step over a state pool (spec 5, 12.10) behind one call.
//
//   gka::Result gka::decode(const DecodeArgs&, cudaStream_t);
//
// decode() validates its arguments on the host (device memory is never read: slot indices and
// cu_seqlens are checked from their host copies when the caller provides them), then enqueues one
// kernel on `stream` (gka/kernels/decode_kernel.cuh; for small grids on sm_90, a launch of
// two-CTA clusters). It needs no workspace, allocates nothing and never synchronises, so it can be
// captured in a CUDA graph and replayed.
//
// GPU-specific rules (beyond validate(args, Backend::kReference)): D = 64 or 128; pool.h fp32,
// pool.s fp32 or bf16; and, because every (sequence, head) reads and writes the pool in one pass,
// no sequence may write a slot that another sequence reads, and no two sequences may write the same
// slot (checked when pool.host_read_slots / host_write_slots are given).
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gka/api/forward.cuh"
#include "gka/args.h"
#include "gka/host/validate.h"
#include "gka/kernels/decode_kernel.cuh"
#include "gka/status.h"

GKA_NAMESPACE_BEGIN

namespace detail {

// One CTA per (sequence, head); kSplit: a cluster of two.
template <int D, class TS, int kMinBlocks, bool kSplit = false>
inline Result launch_decode(const kernels::DecodeParams& p, int64_t num_seqs, cudaStream_t stream) {
  auto kern = kernels::decode_kernel<D, TS, kMinBlocks, kSplit>;
  const int smem = static_cast<int>(sizeof(kernels::DecodeSmem<D>));
  static std::atomic<uint64_t> smem_set{0};
  GKA_RETURN_IF_ERROR(set_smem_once(smem_set, kern, smem, "decode_kernel: cudaFuncSetAttribute"));
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(num_seqs * p.heads_q * (kSplit ? 2 : 1)));
  cfg.blockDim = dim3(kernels::DecodeGeometry<D>::kThreads);
  cfg.dynamicSmemBytes = static_cast<size_t>(smem);
  cfg.stream = stream;
  cudaLaunchAttribute cluster = {};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = 2;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  cfg.attrs = &cluster;
  cfg.numAttrs = kSplit ? 1 : 0;
  return cuda_result(cudaLaunchKernelEx(&cfg, kern, p), "decode_kernel launch");
}

// Whether the split kernel runs on the current device: code compiled for sm_90 or newer (an sm_80
// image has no cluster instructions, and neither has compute_80 PTX JIT-compiled on an H100).
template <class TS>
inline Result split_supported(bool* ok) {
  static std::atomic<int> cache[kMaxCachedDevices];  // 1: no, 2: yes
  int known = 0;
  GKA_RETURN_IF_ERROR(once_per_device(cache, &known, [](int, int* v) {
    cudaFuncAttributes fa = {};
    GKA_RETURN_IF_ERROR(
        cuda_result(cudaFuncGetAttributes(&fa, kernels::decode_kernel<128, TS, 1, true>), "cudaFuncGetAttributes"));
    *v = fa.ptxVersion >= 90 ? 2 : 1;
    return Result::success();
  }));
  *ok = known == 2;
  return Result::success();
}

// The kernel for a pool S of element type TS: D = 64 (two CTAs per SM fit either way), or D = 128
// with the split, or one CTA per task at the register budget min_blocks (both as decode_impl says).
template <class TS>
inline Result launch_decode_for(const kernels::DecodeParams& p, int64_t N, int64_t D, int min_blocks, int split,
                                cudaStream_t stream) {
  if (D == 64) return launch_decode<64, TS, 2>(p, N, stream);
  int sms = 0;
  GKA_RETURN_IF_ERROR(current_sm_count(&sms));
  if (split == 1 || (split == 0 && 2 * N * p.heads_q <= sms)) {
    bool ok = false;
    GKA_RETURN_IF_ERROR(split_supported<TS>(&ok));
    if (ok) return launch_decode<128, TS, 1, true>(p, N, stream);
    if (split == 1) return Result(Status::kErrorArchMismatch, "decode split: thread-block clusters need sm_90 code");
  }
  if (min_blocks == 0) min_blocks = N * p.heads_q > sms ? 2 : 1;
  return min_blocks == 1 ? launch_decode<128, TS, 1>(p, N, stream) : launch_decode<128, TS, 2>(p, N, stream);
}

// min_blocks: the CTAs per SM the kernel's register budget is compiled for (256 threads at
// D = 128): 1 (up to 255 registers, no spills: the fastest single CTA, for grids that do not fill
// the device), 2 (128 registers, two CTAs per SM so one loads while the other solves), 0 = choose:
// 2 when the grid has more CTAs than the device has SMs.
// split: 1 = clusters of two CTAs per (sequence, head), the solver and the state CTA (D = 128,
// sm_90; min_blocks is then 1), -1 = never, 0 = choose: split when the two CTAs of every pair fit
// on the device's SMs at once. Measured in docs/gpu-decode.md.
inline Result decode_impl(const DecodeArgs& args, cudaStream_t stream, int min_blocks, int split = 0);

}  // namespace detail

inline Result decode(const DecodeArgs& args, cudaStream_t stream) { return detail::decode_impl(args, stream, 0); }

inline Result detail::decode_impl(const DecodeArgs& args, cudaStream_t stream, int min_blocks, int split) {
  GKA_RETURN_IF_ERROR(validate(args, Backend::kCuda));
  const ProblemShape& s = args.shape;
  const int64_t N = s.num_states();
  if (N * s.heads_q > 0x7fffffff)
    return Result(Status::kErrorNotSupported, "num_seqs * heads_q = " + std::to_string(N * s.heads_q) +
                                                  " exceeds one launch's grid");
  const OperatorInputs& in = args.in;
  kernels::DecodeParams p;
  p.heads_q = s.heads_q;
  p.group = s.group_size();
  p.seqlen = s.seqlen;
  p.cu_seqlens = s.varlen() ? s.cu_seqlens.data : nullptr;
  p.cu_type = s.cu_seqlens.type;
  p.q = in.q;
  p.k = in.k;
  p.v = in.v;
  p.alpha = in.alpha;
  p.beta = in.beta;
  p.o = args.o;
  // f absent means f = g; g absent means no decay of S.
  p.gate_s = detail::make_gate(in.g);
  p.gate_h = in.f.present() ? detail::make_gate(in.f) : p.gate_s;
  p.l2norm_qk = args.options.l2norm_qk;
  p.use_beta = args.options.fuse_beta;
  p.num_iter = args.options.num_iter;
  p.ridge = static_cast<float>(args.options.ridge_ratio);
  p.scale = static_cast<float>(args.options.resolved_scale(s.head_dim));
  const StatePool& pool = args.pool;
  p.pool_h = pool.h;
  p.pool_s = pool.s;
  p.read_slots = pool.read_slots;
  p.write_slots = pool.write_slots;
  p.slot_type = pool.slot_type;
  p.pad_slot = pool.pad_slot;
  p.has_initial_state = pool.has_initial_state;
  p.inter_h = args.inter_h;
  p.inter_s = args.inter_s;
  // pool S: validated fp32 or bf16
  return pool.s.dtype == DType::kBF16
             ? launch_decode_for<__nv_bfloat16>(p, N, s.head_dim, min_blocks, split, stream)
             : launch_decode_for<float>(p, N, s.head_dim, min_blocks, split, stream);
}

GKA_NAMESPACE_END
