// gka/api/forward.cuh: the chunk-wise GPU forward (spec 3) behind one call.
//
//   size_t      gka::forward_workspace_size(const ForwardArgs&);
//   gka::Result gka::can_implement(const ForwardArgs&, int device);
//   gka::Result gka::forward(const ForwardArgs&, void* workspace, size_t workspace_bytes, cudaStream_t);
//
// forward() validates its arguments on the host (no device memory is read), then enqueues on
// `stream`: [varlen only] the chunk-table kernel, the chunk-state scan (H-bar and S-bar in
// args.chunk_state_dtype, fp32 by default or bf16; H_T and S_T always fp32), and the fused nu + solve + read-out kernel. It allocates nothing and never synchronises,
// so it can be captured in a CUDA graph. With args.pool the scan reads each sequence's initial
// states from, and writes its final states to, the pool's slots (prefill for gka::decode). The workspace is caller-owned, at least
// forward_workspace_size(args) bytes, 256-byte aligned; its contents need not be initialised.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "gka/args.h"
#include "gka/host/validate.h"
#include "gka/kernels/chunk_table_kernel.cuh"
#include "gka/kernels/solve_readout_kernel.cuh"
#include "gka/kernels/state_scan_kernel.cuh"
#include "gka/status.h"

GKA_NAMESPACE_BEGIN

namespace detail {

constexpr int kForwardChunk = 64;

inline size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

struct ForwardLayout {
  int64_t chunk_bound = 0;
  size_t states_bytes = 0;  // one of H-bar / S-bar, in chunk_state_dtype
  size_t off_h = 0, off_s = 0, off_table = 0, off_seqs = 0, off_decays = 0, total = 0;
};

// The scans' decay rows (kernels::scan_decays_kernel).
inline size_t scan_decays_bytes(int64_t chunk_bound, int64_t heads_q) {
  return static_cast<size_t>(chunk_bound) * heads_q * 2 * kernels::kScanDecayRow * sizeof(float);
}

inline ForwardLayout forward_layout(const ForwardArgs& a) {
  ForwardLayout L;
  const ProblemShape& s = a.shape;
  L.chunk_bound = tiling::chunk_bound(s.batch, s.seqlen, s.varlen(), s.cu_seqlens.num_seqs, kForwardChunk);
  const size_t es = a.chunk_state_dtype == DType::kBF16 ? 2 : 4;
  L.states_bytes = align_up(static_cast<size_t>(L.chunk_bound) * s.heads_q * s.head_dim * s.head_dim * es, 256);
  L.off_h = 0;
  L.off_s = L.states_bytes;
  L.off_table = 2 * L.states_bytes;
  size_t end = L.off_table;
  if (s.varlen()) {
    end += align_up(static_cast<size_t>(L.chunk_bound) * 8, 256);
    L.off_seqs = end;
    end += align_up(static_cast<size_t>(s.cu_seqlens.num_seqs) * sizeof(tiling::SeqEntry), 256);
  }
  L.off_decays = end;
  end += align_up(scan_decays_bytes(L.chunk_bound, s.heads_q), 256);
  L.total = end;
  return L;
}

inline gating::Gate make_gate(const TokenTensor& t) {
  gating::Gate g;
  g.data = static_cast<const float*>(t.data);
  g.stride_batch = t.stride_batch;
  g.stride_token = t.stride_token;
  g.stride_head = t.stride_head;
  return g;
}

inline Result cuda_result(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Result::success();
  return Result(Status::kErrorCuda, std::string(what) + ": " + cudaGetErrorString(e));
}

// Per-device, per-process caches of host-side launch set-up, so forward() does not repeat driver
// calls on every launch. Devices past kMaxCachedDevices are served uncached. Thread-safe: racing
// first calls only repeat an idempotent set-up.
constexpr int kMaxCachedDevices = 64;

inline Result current_device(int* dev) { return cuda_result(cudaGetDevice(dev), "cudaGetDevice"); }

// Raise `kern`'s dynamic shared-memory limit to `smem` once per device. Call from a launcher
// template instantiated once per kernel, so `done` is that kernel's own flag set.
template <class Kernel>
inline Result set_smem_once(std::atomic<uint64_t>& done, Kernel kern, int smem, const char* what) {
  int dev = 0;
  GKA_RETURN_IF_ERROR(current_device(&dev));
  const uint64_t bit = dev < kMaxCachedDevices ? uint64_t{1} << dev : 0;
  if (bit != 0 && (done.load(std::memory_order_acquire) & bit) != 0) return Result::success();
  GKA_RETURN_IF_ERROR(cuda_result(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), what));
  done.fetch_or(bit, std::memory_order_release);
  return Result::success();
}

// *value = query(dev, value) for the current device, run once per device; `cache` belongs to the
// caller (one per quantity) and holds query results, which must be positive (0: not queried yet).
template <class Query>
inline Result once_per_device(std::atomic<int> (&cache)[kMaxCachedDevices], int* value, Query query) {
  int dev = 0;
  GKA_RETURN_IF_ERROR(current_device(&dev));
  if (dev < kMaxCachedDevices && (*value = cache[dev].load(std::memory_order_relaxed)) > 0) return Result::success();
  GKA_RETURN_IF_ERROR(query(dev, value));
  if (dev < kMaxCachedDevices) cache[dev].store(*value, std::memory_order_relaxed);
  return Result::success();
}

// The current device's SM count, queried once per device.
inline Result current_sm_count(int* sms) {
  static std::atomic<int> cache[kMaxCachedDevices];
  return once_per_device(cache, sms, [](int dev, int* v) {
    return cuda_result(cudaDeviceGetAttribute(v, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  });
}

template <int D, bool kSplit>
inline int solve_smem_bytes() { return kernels::SolveSmem<D, kSplit>::kBytes; }

inline int solve_smem_bytes(int64_t D, bool split) {
  if (D == 64) return split ? solve_smem_bytes<64, true>() : solve_smem_bytes<64, false>();
  return split ? solve_smem_bytes<128, true>() : solve_smem_bytes<128, false>();
}

inline int scan_smem_bytes(int64_t D, DType t) {
  if (t == DType::kBF16)  // the bf16 fast path; the 64-row tile is the larger
    return D == 64 ? kernels::ScanMmaSmem<64, 64>::kBytes : kernels::ScanMmaSmem<128, 64>::kBytes;
  const int es = dtype_size(t);
  return 2 * 2 * kernels::kScanChunk * (static_cast<int>(D) * es + 16) + 5 * kernels::kScanChunk * 4;
}

template <class Tin, int D, bool kSplit, class TState>
inline Result launch_scan(const kernels::StateScanParams& p, int64_t num_seqs, cudaStream_t stream) {
  auto kern = kernels::state_scan_kernel<Tin, D, kSplit, TState>;
  const int smem = kernels::ScanSmem<Tin, D>::kBytes;
  static std::atomic<uint64_t> smem_set{0};
  GKA_RETURN_IF_ERROR(set_smem_once(smem_set, kern, smem, "state_scan_kernel: cudaFuncSetAttribute"));
  const dim3 grid(static_cast<unsigned>(num_seqs * p.heads_q), 2, D / 64);
  kern<<<grid, kernels::kScanThreads, smem, stream>>>(p);
  return cuda_result(cudaGetLastError(), "state_scan_kernel launch");
}

template <int D, int kRows, class TState>
inline Result launch_scan_mma(const kernels::StateScanParams& p, int64_t num_seqs, cudaStream_t stream) {
  auto kern = kernels::state_scan_mma_kernel<D, kRows, TState>;
  const int smem = kernels::ScanMmaSmem<D, kRows>::kBytes;
  static std::atomic<uint64_t> smem_set{0};
  GKA_RETURN_IF_ERROR(set_smem_once(smem_set, kern, smem, "state_scan_mma_kernel: cudaFuncSetAttribute"));
  const dim3 grid(static_cast<unsigned>(num_seqs * p.heads_q), 2, D / kRows);
  kern<<<grid, kernels::kScanThreads, smem, stream>>>(p);
  return cuda_result(cudaGetLastError(), "state_scan_mma_kernel launch");
}

// bf16 scan: 64-row state tiles, or 32-row tiles (twice the CTAs, each redoing the operand
// preparation) when the 64-row grid would leave at least half the SMs idle. Measured on H200
// (2 x 16 heads x 2 states x 2 tiles = 128 CTAs): 64-row tiles are still the faster there.
template <int D, class TState>
inline Result launch_scan_bf16(const kernels::StateScanParams& p, int64_t num_seqs, cudaStream_t stream) {
  int sms = 0;
  GKA_RETURN_IF_ERROR(current_sm_count(&sms));
  const int64_t ctas64 = num_seqs * p.heads_q * 2 * (D / 64);
  if (ctas64 * 2 <= sms) return launch_scan_mma<D, 32, TState>(p, num_seqs, stream);
  return launch_scan_mma<D, 64, TState>(p, num_seqs, stream);
}

// The scan for q's dtype and D, emitting chunk states of type TState.
template <class TState>
inline Result launch_scan_any(DType t, int64_t D, const kernels::StateScanParams& p, int64_t num_seqs,
                              cudaStream_t stream) {
  switch (t) {
    case DType::kBF16:
      return D == 64 ? launch_scan_bf16<64, TState>(p, num_seqs, stream) : launch_scan_bf16<128, TState>(p, num_seqs, stream);
    case DType::kFP16:
      return D == 64 ? launch_scan<__half, 64, true, TState>(p, num_seqs, stream)
                     : launch_scan<__half, 128, true, TState>(p, num_seqs, stream);
    case DType::kFP32:
      return D == 64 ? launch_scan<float, 64, true, TState>(p, num_seqs, stream)
                     : launch_scan<float, 128, true, TState>(p, num_seqs, stream);
    default: return Result(Status::kErrorUnsupportedDType, "q.dtype");
  }
}

template <int D, bool kSplit, class TState>
inline Result launch_solve(const kernels::SolveReadoutParams& p, int64_t chunk_bound, cudaStream_t stream) {
  auto kern = kernels::solve_readout_kernel<D, kSplit, TState>;
  const int smem = kernels::SolveSmem<D, kSplit>::kBytes;
  static std::atomic<uint64_t> smem_set{0};
  GKA_RETURN_IF_ERROR(set_smem_once(smem_set, kern, smem, "solve_readout_kernel: cudaFuncSetAttribute"));
  const dim3 grid(static_cast<unsigned>(chunk_bound), static_cast<unsigned>(p.heads_q));
  kern<<<grid, kernels::kSolveThreads, smem, stream>>>(p);
  return cuda_result(cudaGetLastError(), "solve_readout_kernel launch");
}

template <class TState>
inline Result launch_solve_any(int64_t D, bool split, const kernels::SolveReadoutParams& p, int64_t chunk_bound,
                               cudaStream_t stream) {
  if (D == 64)
    return split ? launch_solve<64, true, TState>(p, chunk_bound, stream)
                 : launch_solve<64, false, TState>(p, chunk_bound, stream);
  return split ? launch_solve<128, true, TState>(p, chunk_bound, stream)
               : launch_solve<128, false, TState>(p, chunk_bound, stream);
}

// The split (hi + lo) operand policy: inputs that bf16 cannot hold exactly.
inline bool split_policy(const ForwardArgs& a) { return a.in.q.dtype != DType::kBF16; }

// Optional events recorded between the forward's kernels (benchmarks' per-kernel breakdown).
struct ForwardProbe {
  cudaEvent_t after_scan = nullptr;
};

inline Result forward_impl(const ForwardArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                           const ForwardProbe* probe);

// The argument checks can_implement() and forward() share, in this order.
inline Result check_forward_args(const ForwardArgs& args) {
  GKA_RETURN_IF_ERROR(validate(args, Backend::kCuda));
  if (args.options.chunk_size != kForwardChunk)
    return Result(Status::kErrorNotSupported, "options.chunk_size: the CUDA forward implements C = 64 only (got " +
                                                  std::to_string(args.options.chunk_size) + ")");
  return Result::success();
}

}  // namespace detail

inline size_t forward_workspace_size(const ForwardArgs& args) { return detail::forward_layout(args).total; }

// Host-only checks that the kernels can run these arguments on `device`.
namespace detail {
// The device checks shared by the forward's and the backward's can_implement: `extra_smem` is the
// largest dynamic shared memory of the caller's own kernels (0 for the forward).
inline Result check_device(const ForwardArgs& args, int device, int extra_smem, const char* who) {
  if (args.shape.heads_q > 65535)
    return Result(Status::kErrorNotSupported, std::string("shape.heads_q above 65535 is not supported by the CUDA ") + who);
  const ForwardLayout L = forward_layout(args);
  if (L.chunk_bound > 0x7fffffff) return Result(Status::kErrorNotSupported, "too many chunks for one launch");
  cudaDeviceProp prop;
  cudaError_t e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) return cuda_result(e, "cudaGetDeviceProperties");
  if (prop.major < 8)
    return Result(Status::kErrorArchMismatch, std::string("the CUDA ") + who +
                                                  " needs compute capability 8.0 or newer (device has " +
                                                  std::to_string(prop.major) + "." + std::to_string(prop.minor) + ")");
  int need = solve_smem_bytes(args.shape.head_dim, split_policy(args));
  need = std::max(need, scan_smem_bytes(args.shape.head_dim, args.in.q.dtype));
  need = std::max(need, extra_smem);
  const int have = static_cast<int>(prop.sharedMemPerBlockOptin);
  if (need > have)
    return Result(Status::kErrorArchMismatch, "the device offers " + std::to_string(have) +
                                                  " bytes of shared memory per block; the " + who + " needs " +
                                                  std::to_string(need));
  return Result::success();
}
}  // namespace detail

inline Result can_implement(const ForwardArgs& args, int device) {
  GKA_RETURN_IF_ERROR(detail::check_forward_args(args));
  return detail::check_device(args, device, 0, "forward");
}

inline Result forward(const ForwardArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  return detail::forward_impl(args, workspace, workspace_bytes, stream, nullptr);
}

namespace detail {

// Chunk geometry of a problem; with cu_seqlens, enqueues the chunk-table kernel that fills `table`
// ([chunk_bound] int64) and `seqs` ([num_seqs] SeqEntry) on the device.
inline Result make_chunk_geometry(const ProblemShape& s, int64_t chunk_bound, int64_t* table, tiling::SeqEntry* seqs,
                                  cudaStream_t stream, tiling::ChunkGeometry* geo) {
  geo->batch = s.batch;
  geo->seqlen = s.seqlen;
  geo->chunk = kForwardChunk;
  geo->varlen = s.varlen();
  geo->num_seqs = s.num_states();
  geo->chunk_bound = chunk_bound;
  if (!geo->varlen) return Result::success();
  geo->table = table;
  geo->seqs = seqs;
  kernels::ChunkTableParams tp;
  tp.cu_seqlens = s.cu_seqlens.data;
  tp.index_type = s.cu_seqlens.type;
  tp.num_seqs = s.cu_seqlens.num_seqs;
  tp.chunk = kForwardChunk;
  tp.chunk_bound = chunk_bound;
  tp.table = table;
  tp.seqs = seqs;
  kernels::chunk_table_kernel<><<<1, kernels::kChunkTableThreads, 0, stream>>>(tp);
  return cuda_result(cudaGetLastError(), "chunk_table_kernel launch");
}

// f absent means f = g; g absent means no decay of S.
inline gating::Gate gate_of_s(const OperatorInputs& in) { return make_gate(in.g); }
inline gating::Gate gate_of_h(const OperatorInputs& in) { return in.f.present() ? make_gate(in.f) : make_gate(in.g); }

// The chunk-state scans (spec 3.2): H-bar / S-bar before every chunk into states_h / states_s (fp32,
// or bf16 with bf16_states), the final states into args.ht / args.st when present.
inline Result launch_state_scans(const ForwardArgs& args, const tiling::ChunkGeometry& geo, void* states_h,
                                 void* states_s, float* decays, bool bf16_states, cudaStream_t stream) {
  const ProblemShape& s = args.shape;
  const OperatorInputs& in = args.in;
  kernels::StateScanParams sp;
  sp.geo = geo;
  sp.heads_q = s.heads_q;
  sp.group = s.group_size();
  sp.k = in.k;
  sp.v = in.v;
  sp.beta = in.beta;
  sp.gate_h = gate_of_h(in);
  sp.gate_s = gate_of_s(in);
  sp.l2norm_k = args.options.l2norm_qk;
  sp.use_beta = args.options.fuse_beta;
  sp.h0 = in.h0;
  sp.s0 = in.s0;
  sp.ht = args.ht;
  sp.st = args.st;
  sp.states_h = states_h;
  sp.states_s = states_s;
  if (args.pool.present()) {  // initial and final states through the pool's slots (spec 12.10)
    const StatePool& pool = args.pool;
    sp.h0 = sp.ht = pool.h;
    sp.s0 = sp.st = pool.s;
    sp.read_slots = pool.read_slots;
    sp.write_slots = pool.write_slots;
    sp.slot_type = pool.slot_type;
    sp.pad_slot = pool.pad_slot;
    sp.has_initial_state = pool.has_initial_state;
  }
  sp.decays = decays;
  if (geo.chunk_bound > 0) {
    kernels::scan_decays_kernel<><<<dim3(static_cast<unsigned>(geo.chunk_bound), static_cast<unsigned>(s.heads_q)),
                                    kernels::kScanDecayThreads, 0, stream>>>(sp);
    GKA_RETURN_IF_ERROR(cuda_result(cudaGetLastError(), "scan_decays_kernel launch"));
  }
  const int64_t nseq = s.num_states();
  return bf16_states ? launch_scan_any<__nv_bfloat16>(in.q.dtype, s.head_dim, sp, nseq, stream)
                     : launch_scan_any<float>(in.q.dtype, s.head_dim, sp, nseq, stream);
}

// The fused nu + solve + read-out kernel over every chunk (spec 3.3-3.5): o, and x / nu when present.
inline Result launch_solve_readout(const ForwardArgs& args, const tiling::ChunkGeometry& geo, const void* states_h,
                                   const void* states_s, bool bf16_states, cudaStream_t stream) {
  const ProblemShape& s = args.shape;
  const OperatorInputs& in = args.in;
  kernels::SolveReadoutParams pp;
  pp.geo = geo;
  pp.heads_q = s.heads_q;
  pp.group = s.group_size();
  pp.q = in.q;
  pp.k = in.k;
  pp.v = in.v;
  pp.alpha = in.alpha;
  pp.beta = in.beta;
  pp.gate_h = gate_of_h(in);
  pp.gate_s = gate_of_s(in);
  pp.l2norm_qk = args.options.l2norm_qk;
  pp.use_beta = args.options.fuse_beta;
  pp.num_iter = args.options.num_iter;
  pp.ridge = static_cast<float>(args.options.ridge_ratio);
  pp.scale = static_cast<float>(args.options.resolved_scale(s.head_dim));
  pp.states_h = states_h;
  pp.states_s = states_s;
  pp.o = args.o;
  pp.x = args.x;
  pp.nu = args.nu;
  const bool split = split_policy(args);
  return bf16_states ? launch_solve_any<__nv_bfloat16>(s.head_dim, split, pp, geo.chunk_bound, stream)
                     : launch_solve_any<float>(s.head_dim, split, pp, geo.chunk_bound, stream);
}

// Host checks of a caller-owned workspace.
inline Result check_workspace(const void* workspace, size_t workspace_bytes, size_t need, const char* sizer) {
  if (workspace_bytes < need)
    return Result(Status::kErrorWorkspaceTooSmall, "workspace_bytes = " + std::to_string(workspace_bytes) + " < " +
                                                       sizer + " = " + std::to_string(need));
  if (need > 0 && workspace == nullptr) return Result(Status::kErrorNullPointer, "workspace is null");
  if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
    return Result(Status::kErrorMisaligned, "workspace must be 256-byte aligned");
  return Result::success();
}

}  // namespace detail

inline Result detail::forward_impl(const ForwardArgs& args, void* workspace, size_t workspace_bytes,
                                   cudaStream_t stream, const ForwardProbe* probe) {
  GKA_RETURN_IF_ERROR(detail::check_forward_args(args));
  const ProblemShape& s = args.shape;
  const detail::ForwardLayout L = detail::forward_layout(args);
  GKA_RETURN_IF_ERROR(detail::check_workspace(workspace, workspace_bytes, L.total, "forward_workspace_size()"));
  if (s.heads_q > 65535) return Result(Status::kErrorNotSupported, "shape.heads_q above 65535");

  uint8_t* ws = static_cast<uint8_t*>(workspace);
  tiling::ChunkGeometry geo;
  GKA_RETURN_IF_ERROR(detail::make_chunk_geometry(s, L.chunk_bound, reinterpret_cast<int64_t*>(ws + L.off_table),
                                                  reinterpret_cast<tiling::SeqEntry*>(ws + L.off_seqs), stream, &geo));
  if (L.chunk_bound == 0 && !args.ht.present() && !args.st.present() && !args.pool.present()) return Result::success();

  void* states_h = ws + L.off_h;
  void* states_s = ws + L.off_s;
  // Validated to be fp32 or bf16: one template instantiation each, no branch in the kernels.
  const bool bf16_states = args.chunk_state_dtype == DType::kBF16;
  GKA_RETURN_IF_ERROR(detail::launch_state_scans(args, geo, states_h, states_s,
                                                 reinterpret_cast<float*>(ws + L.off_decays), bf16_states, stream));
  if (probe != nullptr && probe->after_scan != nullptr)
    GKA_RETURN_IF_ERROR(detail::cuda_result(cudaEventRecord(probe->after_scan, stream), "probe event"));
  if (L.chunk_bound == 0) return Result::success();
  return detail::launch_solve_readout(args, geo, states_h, states_s, bf16_states, stream);
}

GKA_NAMESPACE_END
