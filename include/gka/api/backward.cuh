// gka/api/backward.cuh: the chunk-wise GPU backward (spec 4) behind one call.
//
//   size_t      gka::backward_workspace_size(const BackwardArgs&);
//   gka::Result gka::can_implement(const BackwardArgs&, int device);
//   gka::Result gka::backward(const BackwardArgs&, void* workspace, size_t workspace_bytes, cudaStream_t);
//
// backward() validates on the host (no device memory is read), then enqueues on `stream` the kernel
// sequence of kernels/backward_params.cuh. It allocates nothing and never synchronises, so it can be
// captured in a CUDA graph. Every gradient is written by exactly one thread in a fixed order: two
// calls give bitwise-equal results.
//
// Saving vs recomputing (the workspace size reports each):
//   * x and nu: pass the forward's (ForwardArgs::x in fp32 is the accurate choice, and nu); when
//     either is absent the backward reruns the forward's kernels to get both (about one forward).
//   * chunk states: pass BackwardArgs::forward_workspace (the forward's workspace, intact) to read
//     H-bar_n / S-bar_n from it, or leave it null to recompute them with the forward's scan kernel
//     (the scan is ~20% of a forward); recomputing needs 2 * chunks * H_q * D^2 * 4 more bytes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "gka/api/forward.cuh"
#include "gka/kernels/backward_params.cuh"
#include "gka/kernels/bwd_cov_kernel.cuh"
#include "gka/kernels/bwd_finish_kernel.cuh"
#include "gka/kernels/bwd_fusion_kernel.cuh"
#include "gka/kernels/bwd_gla_kernel.cuh"
#include "gka/kernels/bwd_reverse_scan_kernel.cuh"
#include "gka/kernels/bwd_solve_kernel.cuh"

GKA_NAMESPACE_BEGIN

namespace detail {

// The forward problem a backward differentiates.
inline ForwardArgs forward_args_of(const BackwardArgs& a) {
  ForwardArgs f;
  f.shape = a.shape;
  f.in = a.in;
  f.options = a.options;
  f.chunk_state_dtype = a.chunk_state_dtype;
  return f;
}

// Runs per sequence of the segmented reverse scans (kernels/backward_params.cuh: ScanSegments) for
// BackwardArgs::scan_segments = 0. A run costs the GLA / cov kernels a carry per chunk before its
// end (~0.5 ms per carried pass over 65,536 tokens x 16 heads on an H200), so the scans are cut
// only when their grid leaves most SMs idle: fewer than kScanFewCtas CTAs (one wave of 128) get
// enough runs to reach kScanCtaTarget, none shorter than kScanMinRun chunks on average. At the
// benchmark shapes (>= 192 CTAs) this is 1; measured in docs/gpu-backward.md.
constexpr int64_t kScanFewCtas = 128, kScanCtaTarget = 256, kScanMinRun = 32;
inline int scan_segments_for(const BackwardArgs& a) {
  if (a.scan_segments > 0) return a.scan_segments;
  const ProblemShape& s = a.shape;
  const int64_t seqs = s.varlen() ? s.cu_seqlens.num_seqs : s.batch;
  if (seqs <= 0) return 1;
  const int64_t ctas = seqs * s.heads_q * 3 * (s.head_dim / 64);
  const int64_t avg_chunks = (s.batch * s.seqlen / seqs + kForwardChunk - 1) / kForwardChunk;
  if (ctas >= kScanFewCtas) return 1;
  const int64_t by_grid = (kScanCtaTarget + ctas - 1) / ctas, by_length = avg_chunks / kScanMinRun;
  return static_cast<int>(std::max<int64_t>(1, std::min(by_grid, by_length)));
}

struct BackwardLayout {
  int64_t chunk_bound = 0, tokens = 0;
  int scan_segments = 1;
  bool recompute_states = false, recompute_x = false;
  // chunk states in bf16: the forward saved its H-bar / S-bar in bf16, and the backward's own
  // per-chunk states (R-bar, S^, B~) follow them (their errors are of the same size, docs/gpu-backward.md)
  bool bf16_states = false;
  size_t off_table = 0, off_seqs = 0;
  size_t off_h = 0, off_s = 0;             // recomputed chunk states (fp32)
  size_t off_x = 0, off_nu = 0, off_o = 0; // recomputed x (fp32), nu, and the forward's o (discarded)
  size_t off_z = 0, off_qmix = 0, off_dk = 0, off_dv = 0;
  size_t off_qdq = 0, off_w = 0, off_unu = 0, off_dgs = 0;
  size_t off_rend = 0, off_send = 0, off_bend = 0;
  size_t off_rfirst = 0, off_sfirst = 0, off_btotal = 0;
  size_t off_scan_wts = 0;
  size_t off_seg_totals = 0, off_seg_decay = 0, off_chunk_decay = 0;  // scan_segments > 1
  size_t total = 0;
};

inline BackwardLayout backward_layout(const BackwardArgs& a) {
  BackwardLayout L;
  const ProblemShape& s = a.shape;
  const int64_t Hq = s.heads_q, D = s.head_dim, N = s.num_states();
  L.chunk_bound = tiling::chunk_bound(s.batch, s.seqlen, s.varlen(), s.cu_seqlens.num_seqs, kForwardChunk);
  L.tokens = s.batch * s.seqlen;
  L.recompute_states = a.forward_workspace == nullptr;
  L.recompute_x = !a.x.present() || !a.nu.present();
  L.bf16_states = !L.recompute_states && a.chunk_state_dtype == DType::kBF16;
  size_t end = 0;
  auto take = [&](size_t bytes) {
    const size_t off = end;
    end += align_up(bytes, 256);
    return off;
  };
  const size_t f4 = sizeof(float);
  const size_t tokD = static_cast<size_t>(L.tokens) * Hq * D * f4, tok1 = static_cast<size_t>(L.tokens) * Hq * f4;
  const size_t chunkDD = static_cast<size_t>(L.chunk_bound) * Hq * D * D * f4;  // recomputed H-bar, S-bar
  const size_t chunkDD_ws = static_cast<size_t>(L.chunk_bound) * Hq * D * D * (L.bf16_states ? 2 : f4);
  const size_t seqDD = static_cast<size_t>(N) * Hq * D * D * f4;
  if (s.varlen()) {
    L.off_table = take(static_cast<size_t>(L.chunk_bound) * 8);
    L.off_seqs = take(static_cast<size_t>(s.cu_seqlens.num_seqs) * sizeof(tiling::SeqEntry));
  }
  if (L.recompute_states) {
    L.off_h = take(chunkDD);
    L.off_s = take(chunkDD);
  }
  if (L.recompute_x) {
    L.off_x = take(tokD);
    L.off_nu = take(tok1);
    L.off_o = take(static_cast<size_t>(L.tokens) * Hq * D * dtype_size(a.in.q.dtype));
  }
  L.off_z = take(tokD);
  L.off_qmix = take(tokD);
  L.off_dk = take(tokD);
  L.off_dv = take(tokD);
  L.off_qdq = take(tok1);
  L.off_w = take(tok1);
  L.off_unu = take(tok1);
  L.off_dgs = take(tok1);
  L.off_rend = take(chunkDD_ws);
  L.off_send = take(chunkDD_ws);
  L.off_rfirst = take(seqDD);
  L.off_sfirst = take(seqDD);
  L.off_scan_wts = take(static_cast<size_t>(L.chunk_bound) * Hq * 3 * kernels::kRscanWts * f4);
  if (a.bp_lambda) {
    L.off_bend = take(chunkDD_ws);
    L.off_btotal = take(seqDD);
  }
  L.scan_segments = scan_segments_for(a);
  if (L.scan_segments > 1) {
    L.off_seg_totals = take(seqDD * 3 * L.scan_segments);
    L.off_seg_decay = take(static_cast<size_t>(N) * L.scan_segments * Hq * 2 * f4);
    L.off_chunk_decay = take(static_cast<size_t>(L.chunk_bound) * Hq * 2 * f4);
  }
  L.total = end;
  return L;
}

inline bool fused_inputs(const BackwardArgs& a) { return a.options.l2norm_qk || a.options.fuse_beta; }

// With the input transforms (kernels/bwd_fusion_kernel.cuh): the transformed q, k, v per query head
// and the gradients w.r.t. them, ahead of the core backward's own workspace.
struct FusionLayout {
  DType dtype = DType::kBF16;  // of the transformed inputs: bf16 for bf16 inputs (the forward's operands), else fp32
  size_t off_q = 0, off_k = 0, off_v = 0, off_dq = 0, off_dk = 0, off_dv = 0, total = 0;
};

inline FusionLayout fusion_layout(const BackwardArgs& a) {
  FusionLayout F;
  if (!fused_inputs(a)) return F;
  F.dtype = a.in.q.dtype == DType::kBF16 ? DType::kBF16 : DType::kFP32;
  const size_t n = static_cast<size_t>(a.shape.batch * a.shape.seqlen * a.shape.heads_q * a.shape.head_dim);
  const size_t in_bytes = align_up(n * dtype_size(F.dtype), 256), grad_bytes = align_up(n * 4, 256);
  F.off_q = 0;
  F.off_k = in_bytes;
  F.off_v = 2 * in_bytes;
  F.off_dq = 3 * in_bytes;
  F.off_dk = F.off_dq + grad_bytes;
  F.off_dv = F.off_dk + grad_bytes;
  F.total = F.off_dv + grad_bytes;
  return F;
}

// The backward the core kernels run when the transforms are on: transformed inputs per query head,
// no transforms, gradients into the fusion region (base = the workspace; null for sizing only).
inline BackwardArgs core_backward_args(const BackwardArgs& a, uint8_t* base, const FusionLayout& F) {
  BackwardArgs c = a;
  const int64_t T = a.shape.seqlen, Hq = a.shape.heads_q, D = a.shape.head_dim;
  c.shape.heads_kv = Hq;
  c.options.l2norm_qk = c.options.fuse_beta = false;
  c.in.beta = TokenTensor{};
  c.dbeta = TokenTensor{};
  auto at = [&](size_t off) -> void* { return base != nullptr ? base + off : nullptr; };
  c.in.q = TokenTensor::contiguous(at(F.off_q), F.dtype, T, Hq, D);
  c.in.k = TokenTensor::contiguous(at(F.off_k), F.dtype, T, Hq, D);
  c.in.v = TokenTensor::contiguous(at(F.off_v), F.dtype, T, Hq, D);
  c.dq = TokenTensor::contiguous(at(F.off_dq), DType::kFP32, T, Hq, D);
  c.dk = TokenTensor::contiguous(at(F.off_dk), DType::kFP32, T, Hq, D);
  c.dv = TokenTensor::contiguous(at(F.off_dv), DType::kFP32, T, Hq, D);
  return c;
}

inline Result check_backward_args(const BackwardArgs& args) {
  GKA_RETURN_IF_ERROR(validate(args, Backend::kCuda));
  if (args.options.chunk_size != kForwardChunk)
    return Result(Status::kErrorNotSupported, "options.chunk_size: the CUDA backward implements C = 64 only (got " +
                                                  std::to_string(args.options.chunk_size) + ")");
  if (args.shape.heads_q > 65535)
    return Result(Status::kErrorNotSupported, "shape.heads_q above 65535 is not supported by the CUDA backward");
  {  // kernels::ChunkCarry holds a run total's index in an int
    const ProblemShape& s = args.shape;
    const int64_t seqs = s.varlen() ? s.cu_seqlens.num_seqs : s.batch;
    if (seqs * scan_segments_for(args) * s.heads_q * 3 > INT32_MAX)
      return Result(Status::kErrorNotSupported, "scan_segments: sequences x runs x heads x 3 must stay below 2^31");
  }
  return Result::success();
}

// Optional events recorded between the backward's kernels (benchmarks' per-kernel breakdown).
struct BackwardProbe {
  cudaEvent_t after_prologue = nullptr;  // chunk table, recomputed states / x
  cudaEvent_t after_solve = nullptr;
  cudaEvent_t after_rscan = nullptr;
  cudaEvent_t after_gla = nullptr;
  cudaEvent_t after_cov = nullptr;
};

inline Result record(const BackwardProbe* probe, cudaEvent_t BackwardProbe::*which, cudaStream_t stream) {
  if (probe == nullptr || probe->*which == nullptr) return Result::success();
  return cuda_result(cudaEventRecord(probe->*which, stream), "probe event");
}

template <class Kernel>
inline Result launch_checked(std::atomic<uint64_t>& smem_set, Kernel kern, dim3 grid, int threads, int smem,
                             cudaStream_t stream, const kernels::BackwardParams& p, const char* what) {
  if (smem > 48 * 1024) GKA_RETURN_IF_ERROR(set_smem_once(smem_set, kern, smem, what));
  kern<<<grid, threads, smem, stream>>>(p);
  return cuda_result(cudaGetLastError(), what);
}

// The backward's chunk kernels, one step each (kernels/backward_params.cuh lists the sequence).
template <int D, class TState>
inline Result launch_bwd_solve(const kernels::BackwardParams& p, bool split, cudaStream_t stream) {
  const unsigned cb = static_cast<unsigned>(p.geo.chunk_bound), hq = static_cast<unsigned>(p.heads_q);
  if (cb == 0) return Result::success();
  if (split) {
    static std::atomic<uint64_t> s{0};
    return launch_checked(s, kernels::bwd_solve_kernel<D, true, TState>, dim3(cb, hq), kernels::kBwdSolveThreads,
                          kernels::BwdSolveSmem<D, true>::kBytes, stream, p, "bwd_solve_kernel");
  }
  static std::atomic<uint64_t> s{0};
  return launch_checked(s, kernels::bwd_solve_kernel<D, false, TState>, dim3(cb, hq), kernels::kBwdSolveThreads,
                        kernels::BwdSolveSmem<D, false>::kBytes, stream, p, "bwd_solve_kernel");
}

inline Result launch_scan_weights(const kernels::BackwardParams& p, cudaStream_t stream) {
  const unsigned cb = static_cast<unsigned>(p.geo.chunk_bound), hq = static_cast<unsigned>(p.heads_q);
  if (cb == 0) return Result::success();
  kernels::bwd_scan_weights_kernel<><<<dim3(cb, hq), kernels::kScanWeightsThreads, 0, stream>>>(p);
  return cuda_result(cudaGetLastError(), "bwd_scan_weights_kernel");
}

// The reverse scans of `roles` (kernels::RscanRoles); then, once all three are done (kRscanAll, or
// the caller after both halves), the carries of segmented scans (launch_scan_carries).
template <int D, class TState>
inline Result launch_reverse_scans(const kernels::BackwardParams& p, int64_t num_seqs, kernels::RscanRoles roles,
                                   cudaStream_t stream) {
  kernels::BackwardParams q = p;
  q.rscan_roles = roles;
  const unsigned ny = roles == kernels::kRscanAll ? 3 : roles == kernels::kRscanSHat ? 1 : 2;
  static std::atomic<uint64_t> s{0};
  return launch_checked(s, kernels::bwd_reverse_scan_kernel<D, TState, TState>,
                        dim3(static_cast<unsigned>(num_seqs * p.seg.count * p.heads_q), ny, D / 64),
                        kernels::kRscanThreads, kernels::RscanSmem<D>::kBytes, stream, q, "bwd_reverse_scan_kernel");
}

template <int D>
inline Result launch_scan_carries(const kernels::BackwardParams& p, int64_t num_seqs, cudaStream_t stream) {
  if (p.seg.count <= 1 || num_seqs == 0) return Result::success();
  kernels::bwd_scan_carry_kernel<D><<<dim3(static_cast<unsigned>(num_seqs * p.heads_q), 2,
                                           D * D / (4 * kernels::kCarryThreads)),
                                      kernels::kCarryThreads, 0, stream>>>(p);
  return cuda_result(cudaGetLastError(), "bwd_scan_carry_kernel");
}

// A (chunk, head) kernel of the backward; with segmented scans the chunks that add a carry run in a
// second launch, of its kCarry instantiation. `set`: the two kernels' shared-memory flags.
template <class Plain, class Carried>
inline Result launch_chunk_kernel(const kernels::BackwardParams& p, Plain plain, Carried carried, int threads,
                                  int smem, std::atomic<uint64_t> (&set)[2], const char* what, cudaStream_t stream) {
  const unsigned cb = static_cast<unsigned>(p.geo.chunk_bound), hq = static_cast<unsigned>(p.heads_q);
  if (cb == 0) return Result::success();
  GKA_RETURN_IF_ERROR(launch_checked(set[0], plain, dim3(cb, hq), threads, smem, stream, p, what));
  if (p.seg.count <= 1) return Result::success();
  return launch_checked(set[1], carried, dim3(cb, hq), threads, smem, stream, p, what);
}

template <int D, class TState>
inline Result launch_bwd_gla(const kernels::BackwardParams& p, cudaStream_t stream) {
  static std::atomic<uint64_t> set[2]{};
  return launch_chunk_kernel(p, kernels::bwd_gla_kernel<D, TState, TState>, kernels::bwd_gla_kernel<D, TState, TState, true>,
                             kernels::kBwdGlaThreads, kernels::BwdGlaSmem<D>::kBytes, set, "bwd_gla_kernel", stream);
}

template <int D, class TState>
inline Result launch_bwd_cov(const kernels::BackwardParams& p, cudaStream_t stream) {
  static std::atomic<uint64_t> set[2]{};
  return launch_chunk_kernel(p, kernels::bwd_cov_kernel<D, TState, TState>, kernels::bwd_cov_kernel<D, TState, TState, true>,
                             kernels::kBwdCovThreads, kernels::BwdCovSmem<D>::kBytes, set, "bwd_cov_kernel", stream);
}

// The chunk kernels on one stream, with the probe's events between them.
template <int D, class TState>
inline Result launch_backward_kernels(const kernels::BackwardParams& p, bool split, int64_t num_seqs,
                                      cudaStream_t stream, const BackwardProbe* probe) {
  GKA_RETURN_IF_ERROR((launch_bwd_solve<D, TState>(p, split, stream)));
  GKA_RETURN_IF_ERROR(record(probe, &BackwardProbe::after_solve, stream));
  GKA_RETURN_IF_ERROR(launch_scan_weights(p, stream));
  GKA_RETURN_IF_ERROR((launch_reverse_scans<D, TState>(p, num_seqs, kernels::kRscanAll, stream)));
  GKA_RETURN_IF_ERROR(launch_scan_carries<D>(p, num_seqs, stream));
  GKA_RETURN_IF_ERROR(record(probe, &BackwardProbe::after_rscan, stream));
  GKA_RETURN_IF_ERROR((launch_bwd_gla<D, TState>(p, stream)));
  GKA_RETURN_IF_ERROR(record(probe, &BackwardProbe::after_gla, stream));
  GKA_RETURN_IF_ERROR((launch_bwd_cov<D, TState>(p, stream)));
  return record(probe, &BackwardProbe::after_cov, stream);
}

// The fork / join events of the two-stream backward: one pair per device and host thread, made on
// first use and kept, so that a call creates no driver objects. Reusing them is safe: a stream wait
// waits for the record that was the event's latest when the wait was enqueued, and a thread enqueues
// one call after the other. Devices past kMaxCachedDevices get none (the call then runs on one stream).
struct OverlapEvents {
  cudaEvent_t forked = nullptr, scanned = nullptr;
};
inline Result overlap_events(OverlapEvents* out) {
  struct Cache {
    OverlapEvents ev[kMaxCachedDevices];
    ~Cache() {  // at thread exit; errors (a runtime already torn down) are of no use then
      for (OverlapEvents& e : ev) {
        if (e.forked != nullptr) cudaEventDestroy(e.forked);
        if (e.scanned != nullptr) cudaEventDestroy(e.scanned);
      }
    }
  };
  thread_local Cache cache;
  int dev = 0;
  GKA_RETURN_IF_ERROR(current_device(&dev));
  *out = OverlapEvents{};
  if (dev >= kMaxCachedDevices) return Result::success();
  OverlapEvents& e = cache.ev[dev];
  if (e.forked == nullptr)
    GKA_RETURN_IF_ERROR(cuda_result(cudaEventCreateWithFlags(&e.forked, cudaEventDisableTiming), "overlap event"));
  if (e.scanned == nullptr)
    GKA_RETURN_IF_ERROR(cuda_result(cudaEventCreateWithFlags(&e.scanned, cudaEventDisableTiming), "overlap event"));
  *out = e;
  return Result::success();
}

// With BackwardArgs::overlap_stream: the reverse scans that only the cov kernel needs (R-bar, B~) run
// on `side`, forked once the weights pass is done, while `stream` runs the S^ scan and then the GLA
// kernel, which needs nothing else; the cov kernel waits for both. On long sequences the scans are
// a chain through every chunk that leaves SMs idle, and the GLA kernel fills them. Segmented scans
// need every run total for their carries, so there the GLA kernel waits for both scans too.
// Kernels of the two chains write disjoint arrays: bitwise the one-stream result.
template <int D, class TState>
inline Result launch_backward_kernels_overlapped(const kernels::BackwardParams& p, bool split, int64_t num_seqs,
                                                 cudaStream_t stream, cudaStream_t side, const OverlapEvents& ev) {
  cudaEvent_t forked = ev.forked, scanned = ev.scanned;
  Result r = launch_bwd_solve<D, TState>(p, split, stream);
  if (r.ok()) r = launch_scan_weights(p, stream);
  if (r.ok()) r = cuda_result(cudaEventRecord(forked, stream), "overlap event");
  if (r.ok()) r = cuda_result(cudaStreamWaitEvent(side, forked, 0), "overlap wait");
  if (r.ok()) r = launch_reverse_scans<D, TState>(p, num_seqs, kernels::kRscanCov, side);
  if (r.ok()) r = cuda_result(cudaEventRecord(scanned, side), "overlap event");
  if (r.ok()) r = launch_reverse_scans<D, TState>(p, num_seqs, kernels::kRscanSHat, stream);
  const bool segmented = p.seg.count > 1;
  if (r.ok() && segmented) r = cuda_result(cudaStreamWaitEvent(stream, scanned, 0), "overlap wait");
  if (r.ok()) r = launch_scan_carries<D>(p, num_seqs, stream);
  if (r.ok()) r = launch_bwd_gla<D, TState>(p, stream);
  if (r.ok() && !segmented) r = cuda_result(cudaStreamWaitEvent(stream, scanned, 0), "overlap wait");
  if (r.ok()) r = launch_bwd_cov<D, TState>(p, stream);
  return r;
}

// dk, dv over the GQA groups (with direct_dkv the GLA / cov kernels wrote them); dH_0, dS_0.
template <int D>
inline Result launch_backward_finish(const kernels::BackwardParams& p, int64_t tokens, int64_t num_seqs,
                                     cudaStream_t stream) {
  if (tokens > 0 && !p.direct_dkv) {
    const int64_t pairs = tokens * (D / 2);
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((pairs + kernels::kBwdFinishThreads - 1) /
                                                                        kernels::kBwdFinishThreads, 4096));
    kernels::bwd_group_sum_kernel<D><<<dim3(blocks, static_cast<unsigned>(p.heads_q / p.group)), kernels::kBwdFinishThreads,
                                    0, stream>>>(p, tokens);
    GKA_RETURN_IF_ERROR(cuda_result(cudaGetLastError(), "bwd_group_sum_kernel"));
  }
  if (num_seqs > 0 && (p.dh0.present() || p.ds0.present())) {
    const unsigned blocks = static_cast<unsigned>((D * D + kernels::kBwdFinishThreads - 1) / kernels::kBwdFinishThreads);
    kernels::bwd_state_grads_kernel<D><<<dim3(blocks, static_cast<unsigned>(p.heads_q), static_cast<unsigned>(num_seqs)),
                                      kernels::kBwdFinishThreads, 0, stream>>>(p);
    GKA_RETURN_IF_ERROR(cuda_result(cudaGetLastError(), "bwd_state_grads_kernel"));
  }
  return Result::success();
}

}  // namespace detail

inline size_t backward_workspace_size(const BackwardArgs& args) {
  if (!detail::fused_inputs(args)) return detail::backward_layout(args).total;
  const detail::FusionLayout F = detail::fusion_layout(args);
  return F.total + detail::backward_layout(detail::core_backward_args(args, nullptr, F)).total;
}

// Host-only checks that the kernels can run these arguments on `device`.
inline Result can_implement(const BackwardArgs& args, int device) {
  GKA_RETURN_IF_ERROR(detail::check_backward_args(args));
  const bool split = args.in.q.dtype != DType::kBF16;
  int smem = 0;
  if (args.shape.head_dim == 64)
    smem = std::max({split ? kernels::BwdSolveSmem<64, true>::kBytes : kernels::BwdSolveSmem<64, false>::kBytes,
                     kernels::RscanSmem<64>::kBytes, kernels::BwdGlaSmem<64>::kBytes, kernels::BwdCovSmem<64>::kBytes});
  else
    smem = std::max({split ? kernels::BwdSolveSmem<128, true>::kBytes : kernels::BwdSolveSmem<128, false>::kBytes,
                     kernels::RscanSmem<128>::kBytes, kernels::BwdGlaSmem<128>::kBytes, kernels::BwdCovSmem<128>::kBytes});
  return detail::check_device(detail::forward_args_of(args), device, smem, "backward");
}

namespace detail {
inline Result backward_core(const BackwardArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                           const BackwardProbe* probe = nullptr);
// backward() with per-kernel events (no input transforms).
inline Result backward_impl(const BackwardArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                            const BackwardProbe* probe) {
  GKA_RETURN_IF_ERROR(check_backward_args(args));
  if (fused_inputs(args)) return Result(Status::kErrorNotSupported, "backward_impl: no input transforms");
  return backward_core(args, workspace, workspace_bytes, stream, probe);
}
}  // namespace detail

inline Result backward(const BackwardArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  GKA_RETURN_IF_ERROR(detail::check_backward_args(args));
  GKA_RETURN_IF_ERROR(
      detail::check_workspace(workspace, workspace_bytes, backward_workspace_size(args), "backward_workspace_size()"));
  if (!detail::fused_inputs(args)) return detail::backward_core(args, workspace, workspace_bytes, stream);

  const detail::FusionLayout F = detail::fusion_layout(args);
  uint8_t* ws = static_cast<uint8_t*>(workspace);
  const BackwardArgs core = detail::core_backward_args(args, ws, F);
  const ProblemShape& s = args.shape;
  kernels::FusionParams fp;
  fp.batch = s.batch;
  fp.seqlen = s.seqlen;
  fp.heads_q = s.heads_q;
  fp.group = s.group_size();
  fp.l2norm = args.options.l2norm_qk;
  fp.use_beta = args.options.fuse_beta;
  fp.q = args.in.q;
  fp.k = args.in.k;
  fp.v = args.in.v;
  fp.beta = args.in.beta;
  fp.qh = core.in.q;
  fp.kh = core.in.k;
  fp.vh = core.in.v;
  fp.dqh = core.dq;
  fp.dkh = core.dk;
  fp.dvh = core.dv;
  fp.dq = args.dq;
  fp.dk = args.dk;
  fp.dv = args.dv;
  fp.dbeta = args.dbeta;
  const int rows_per_block = kernels::kFusionThreads / 32;
  const int64_t rows_q = s.batch * s.seqlen * s.heads_q, rows_kv = s.batch * s.seqlen * s.heads_kv;
  const unsigned blocks_q = static_cast<unsigned>((rows_q + rows_per_block - 1) / rows_per_block);
  const unsigned blocks_kv = static_cast<unsigned>((rows_kv + rows_per_block - 1) / rows_per_block);
  if (s.head_dim == 64) kernels::fused_inputs_kernel<64><<<blocks_q, kernels::kFusionThreads, 0, stream>>>(fp);
  else kernels::fused_inputs_kernel<128><<<blocks_q, kernels::kFusionThreads, 0, stream>>>(fp);
  GKA_RETURN_IF_ERROR(detail::cuda_result(cudaGetLastError(), "fused_inputs_kernel"));
  GKA_RETURN_IF_ERROR(detail::backward_core(core, ws + F.total, workspace_bytes - F.total, stream));
  if (s.head_dim == 64) kernels::fused_inputs_backward_kernel<64><<<blocks_kv, kernels::kFusionThreads, 0, stream>>>(fp);
  else kernels::fused_inputs_backward_kernel<128><<<blocks_kv, kernels::kFusionThreads, 0, stream>>>(fp);
  return detail::cuda_result(cudaGetLastError(), "fused_inputs_backward_kernel");
}

inline Result detail::backward_core(const BackwardArgs& args, void* workspace, size_t workspace_bytes,
                                    cudaStream_t stream, const BackwardProbe* probe) {
  GKA_RETURN_IF_ERROR(detail::check_backward_args(args));
  const ProblemShape& s = args.shape;
  const detail::BackwardLayout L = detail::backward_layout(args);
  GKA_RETURN_IF_ERROR(detail::check_workspace(workspace, workspace_bytes, L.total, "backward_workspace_size()"));
  uint8_t* ws = static_cast<uint8_t*>(workspace);
  const int64_t Hq = s.heads_q, D = s.head_dim, T = s.seqlen, N = s.num_states();

  tiling::ChunkGeometry geo;
  GKA_RETURN_IF_ERROR(detail::make_chunk_geometry(s, L.chunk_bound, reinterpret_cast<int64_t*>(ws + L.off_table),
                                                  reinterpret_cast<tiling::SeqEntry*>(ws + L.off_seqs), stream, &geo));

  // Chunk states and the forward's x / nu: saved or recomputed.
  ForwardArgs fa = detail::forward_args_of(args);
  const void* states_h = nullptr;
  const void* states_s = nullptr;
  if (L.recompute_states || L.recompute_x) {
    // Recompute into this workspace, fp32 (the saved forward workspace, if any, is not touched).
    fa.chunk_state_dtype = DType::kFP32;
    void* sh = ws + L.off_h;
    void* ss = ws + L.off_s;
    if (!L.recompute_states) {  // states saved, only x / nu missing: read the saved states
      const detail::ForwardLayout FL = detail::forward_layout(detail::forward_args_of(args));
      states_h = static_cast<const uint8_t*>(args.forward_workspace) + FL.off_h;
      states_s = static_cast<const uint8_t*>(args.forward_workspace) + FL.off_s;
    } else {
      // the scans' decay rows go where the reverse scans' weights go later (bwd_scan_weights_kernel)
      static_assert(3 * kernels::kRscanWts >= 2 * kernels::kScanDecayRow, "decay rows fit the weights region");
      GKA_RETURN_IF_ERROR(detail::launch_state_scans(fa, geo, sh, ss, reinterpret_cast<float*>(ws + L.off_scan_wts),
                                                     false, stream));
      states_h = sh;
      states_s = ss;
    }
    if (L.recompute_x && L.chunk_bound > 0) {
      fa.x = TokenTensor::contiguous(ws + L.off_x, DType::kFP32, T, Hq, D);
      fa.nu = TokenTensor::contiguous(ws + L.off_nu, DType::kFP32, T, Hq, 1);
      fa.o = TokenTensor::contiguous(ws + L.off_o, args.in.q.dtype, T, Hq, D);
      GKA_RETURN_IF_ERROR(detail::launch_solve_readout(fa, geo, states_h, states_s, L.bf16_states, stream));
    }
  } else {
    const detail::ForwardLayout FL = detail::forward_layout(fa);
    states_h = static_cast<const uint8_t*>(args.forward_workspace) + FL.off_h;
    states_s = static_cast<const uint8_t*>(args.forward_workspace) + FL.off_s;
  }

  GKA_RETURN_IF_ERROR(detail::record(probe, &detail::BackwardProbe::after_prologue, stream));
  kernels::BackwardParams p;
  p.geo = geo;
  p.heads_q = Hq;
  p.group = s.group_size();
  p.q = args.in.q;
  p.k = args.in.k;
  p.v = args.in.v;
  p.alpha = args.in.alpha;
  p.x = L.recompute_x ? TokenTensor::contiguous(ws + L.off_x, DType::kFP32, T, Hq, D) : args.x;
  p.nu = L.recompute_x ? TokenTensor::contiguous(ws + L.off_nu, DType::kFP32, T, Hq, 1) : args.nu;
  p.d_o = args.d_o;
  p.gate_h = detail::gate_of_h(args.in);
  p.gate_s = detail::gate_of_s(args.in);
  p.f_given = args.in.f.present();
  p.num_iter = args.options.num_iter;
  p.ridge = static_cast<float>(args.options.ridge_ratio);
  p.scale = static_cast<float>(args.options.resolved_scale(D));
  p.bp_lambda = args.bp_lambda;
  p.states_h = states_h;
  p.states_s = states_s;
  p.d_ht = args.d_ht;
  p.d_st = args.d_st;
  p.dq = args.dq;
  p.dalpha = args.dalpha;
  p.dg = args.dg;
  p.df = args.df;
  p.dh0 = args.dh0;
  p.ds0 = args.ds0;
  p.dk_out = args.dk;
  p.dv_out = args.dv;
  p.direct_dkv = p.group == 1;
  auto tokD = [&](size_t off) { return TokenTensor::contiguous(ws + off, DType::kFP32, T, Hq, D); };
  auto tok1 = [&](size_t off) { return TokenTensor::contiguous(ws + off, DType::kFP32, T, Hq, 1); };
  p.ws.z = tokD(L.off_z);
  p.ws.qmix = tokD(L.off_qmix);
  p.ws.dk = tokD(L.off_dk);
  p.ws.dv = tokD(L.off_dv);
  p.ws.qdq = tok1(L.off_qdq);
  p.ws.w = tok1(L.off_w);
  p.ws.unu = tok1(L.off_unu);
  p.ws.dg_s = tok1(L.off_dgs);
  p.ws.r_end = ws + L.off_rend;
  p.ws.s_end = ws + L.off_send;
  p.ws.r_first = reinterpret_cast<float*>(ws + L.off_rfirst);
  p.ws.s_first = reinterpret_cast<float*>(ws + L.off_sfirst);
  p.ws.scan_wts = reinterpret_cast<float*>(ws + L.off_scan_wts);
  if (args.bp_lambda) {
    p.ws.b_end = ws + L.off_bend;
    p.ws.b_total = reinterpret_cast<float*>(ws + L.off_btotal);
  }
  p.seg.count = L.scan_segments;
  if (L.scan_segments > 1) {
    p.seg.totals = reinterpret_cast<float*>(ws + L.off_seg_totals);
    p.seg.seg_decay = reinterpret_cast<float*>(ws + L.off_seg_decay);
    p.seg.chunk_decay = reinterpret_cast<float*>(ws + L.off_chunk_decay);
  }

  const bool split = args.in.q.dtype != DType::kBF16;  // the forward's operand policy
  Result r = Result::success();
  cudaStream_t side = static_cast<cudaStream_t>(args.overlap_stream);
  // two chains (not while probing stage times)
  detail::OverlapEvents ev;
  if (side != nullptr && side != stream && probe == nullptr) GKA_RETURN_IF_ERROR(detail::overlap_events(&ev));
  if (ev.forked != nullptr) {
    if (D == 64)
      r = L.bf16_states ? detail::launch_backward_kernels_overlapped<64, __nv_bfloat16>(p, split, N, stream, side, ev)
                      : detail::launch_backward_kernels_overlapped<64, float>(p, split, N, stream, side, ev);
    else
      r = L.bf16_states ? detail::launch_backward_kernels_overlapped<128, __nv_bfloat16>(p, split, N, stream, side, ev)
                      : detail::launch_backward_kernels_overlapped<128, float>(p, split, N, stream, side, ev);
  } else if (D == 64) {
    r = L.bf16_states ? detail::launch_backward_kernels<64, __nv_bfloat16>(p, split, N, stream, probe)
                    : detail::launch_backward_kernels<64, float>(p, split, N, stream, probe);
  } else {
    r = L.bf16_states ? detail::launch_backward_kernels<128, __nv_bfloat16>(p, split, N, stream, probe)
                    : detail::launch_backward_kernels<128, float>(p, split, N, stream, probe);
  }
  GKA_RETURN_IF_ERROR(r);
  return D == 64 ? detail::launch_backward_finish<64>(p, L.tokens, N, stream)
                 : detail::launch_backward_finish<128>(p, L.tokens, N, stream);
}

GKA_NAMESPACE_END
