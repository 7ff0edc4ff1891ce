// gka/host/validate.h: argument checks shared by every entry point (reference and CUDA).
//
// Each failure returns its own Status and a message that names the argument, e.g.
//   kErrorMisaligned: "k.stride_token: 130 bytes is not a multiple of 16"
// Nothing here reads device memory: cu_seqlens and slot indices are checked from their host
// copies (SeqOffsets::host_data, StatePool::host_*_slots) when the caller provides them, and
// from the data itself on the reference backend, where all pointers are host pointers.
#pragma once

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "gka/args.h"
#include "gka/config.h"
#include "gka/status.h"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN

// Where the pointers live and which kernels will consume them.
enum class Backend : int {
  kReference,  // host pointers, the float64/float32 reference: any D, fp64 accepted
  kCuda,       // device pointers, the CUDA kernels: D in {64, 128}, 16-byte vector alignment
};

namespace detail {

inline Result fail(Status s, const std::string& what) { return Result(s, what); }

inline bool dtype_in(DType t, std::initializer_list<DType> allowed) {
  for (DType a : allowed)
    if (a == t) return true;
  return false;
}

// Floating dtypes accepted for token data (q, k, v, o, ...) on each backend.
inline std::initializer_list<DType> token_dtypes(Backend b) {
  static const std::initializer_list<DType> cuda = {DType::kBF16, DType::kFP16, DType::kFP32};
  static const std::initializer_list<DType> ref = {DType::kBF16, DType::kFP16, DType::kFP32,
                                                   DType::kFP64};
  return b == Backend::kCuda ? cuda : ref;
}
// fp32 quantities (gates, states, nu); the reference also takes fp64.
inline std::initializer_list<DType> wide_dtypes(Backend b) {
  static const std::initializer_list<DType> cuda = {DType::kFP32};
  static const std::initializer_list<DType> ref = {DType::kFP32, DType::kFP64};
  return b == Backend::kCuda ? cuda : ref;
}

inline Result check_dtype(const char* name, DType t, std::initializer_list<DType> allowed) {
  if (dtype_in(t, allowed)) return Result::success();
  std::string list;
  for (DType a : allowed) list += std::string(list.empty() ? "" : ", ") + dtype_name(a);
  return fail(Status::kErrorUnsupportedDType,
              std::string(name) + ": dtype " + dtype_name(t) + " not accepted here (accepted: " +
                  list + ")");
}

// One dimension of a strided view, for the overlap check of outputs.
struct Dim {
  int64_t size, stride;
};

// True when distinct indices of the view map to distinct elements (sorted-stride test).
inline bool non_overlapping(Dim* dims, int n) {
  for (int i = 1; i < n; ++i)  // insertion sort by stride
    for (int j = i; j > 0 && dims[j].stride < dims[j - 1].stride; --j) {
      Dim t = dims[j];
      dims[j] = dims[j - 1];
      dims[j - 1] = t;
    }
  int64_t span = 0;  // largest offset reachable with the smaller-stride dims
  for (int i = 0; i < n; ++i) {
    if (dims[i].size <= 1) continue;
    if (dims[i].stride <= span) return false;
    span += (dims[i].size - 1) * dims[i].stride;
  }
  return true;
}

// One strided view, token or state, given by its three outer strides (in elements, named for
// the messages) and the four dimensions of its index space. Checks presence (an absent optional
// view passes), dtype, sign of the strides, `row_check` (a failure of the caller's own stride rule,
// or success), no overlap for outputs, and alignment (16 bytes on CUDA for vector data).
struct ViewStrides {
  const char* name[3];
  int64_t value[3];
};

inline Result check_view(const std::string& n, const void* data, DType dtype, bool required,
                         std::initializer_list<DType> dtypes, Backend backend, bool output,
                         const ViewStrides& strides, Dim (&dims)[4], bool vector_data,
                         const Result& row_check = Result::success()) {
  if (!data) {
    if (required) return fail(Status::kErrorNullPointer, n + ".data is null (required)");
    return Result::success();
  }
  GKA_RETURN_IF_ERROR(check_dtype(n.c_str(), dtype, dtypes));
  for (int64_t s : strides.value)
    if (s < 0) return fail(Status::kErrorInvalidStride, n + ": negative strides are not supported");
  GKA_RETURN_IF_ERROR(row_check);
  if (output && !non_overlapping(dims, 4)) {
    std::string list;
    for (int i = 0; i < 3; ++i)
      list += std::string(i ? ", " : "") + strides.name[i] + " " + std::to_string(strides.value[i]);
    return fail(Status::kErrorInvalidStride,
                n + ": strides (" + list + ") make distinct elements of an output overlap");
  }
  const int64_t esize = dtype_size(dtype);
  // The CUDA kernels move token vectors and state rows with 16-byte loads.
  const int64_t align = (backend == Backend::kCuda && vector_data) ? 16 : esize;
  if (reinterpret_cast<uintptr_t>(data) % static_cast<uintptr_t>(align) != 0)
    return fail(Status::kErrorMisaligned,
                n + ".data is not " + std::to_string(align) + "-byte aligned");
  for (int i = 0; i < 3; ++i)
    if ((strides.value[i] * esize) % align != 0)
      return fail(Status::kErrorMisaligned, n + "." + strides.name[i] + ": " +
                                                std::to_string(strides.value[i] * esize) +
                                                " bytes is not a multiple of " +
                                                std::to_string(align));
  return Result::success();
}

// A per-token tensor [B, T, H, width]; `output` adds the no-overlap requirement.
inline Result check_token(const char* name, const TokenTensor& t, bool required, int64_t B,
                          int64_t T, int64_t H, int64_t width, std::initializer_list<DType> dtypes,
                          Backend backend, bool output) {
  Dim dims[4] = {{B, t.stride_batch}, {T, t.stride_token}, {H, t.stride_head}, {width, 1}};
  return check_view(name, t.data, t.dtype, required, dtypes, backend, output,
                    {{"stride_batch", "stride_token", "stride_head"},
                     {t.stride_batch, t.stride_token, t.stride_head}},
                    dims, width > 1);
}

inline Result check_state(const char* name, const StateTensor& s, bool required, int64_t N,
                          int64_t H, int64_t D, std::initializer_list<DType> dtypes, Backend backend,
                          bool output) {
  Dim dims[4] = {{N, s.stride_seq}, {H, s.stride_head}, {D, s.stride_row}, {D, 1}};
  const Result rows = s.stride_row < D && D > 1
                          ? fail(Status::kErrorInvalidStride,
                                 std::string(name) + ".stride_row (" + std::to_string(s.stride_row) +
                                     ") is smaller than D (" + std::to_string(D) + ")")
                          : Result::success();
  return check_view(name, s.data, s.dtype, required, dtypes, backend, output,
                    {{"stride_seq", "stride_head", "stride_row"},
                     {s.stride_seq, s.stride_head, s.stride_row}},
                    dims, true, rows);
}

template <class Index>
inline Result check_offsets_values(const Index* p, int64_t num_seqs, int64_t total) {
  if (p[0] != 0)
    return fail(Status::kErrorInvalidCuSeqlens,
                "cu_seqlens[0] must be 0 (got " + std::to_string(static_cast<int64_t>(p[0])) + ")");
  for (int64_t i = 0; i < num_seqs; ++i)
    if (p[i + 1] < p[i])
      return fail(Status::kErrorInvalidCuSeqlens,
                  "cu_seqlens decreases at index " + std::to_string(i + 1) + " (" +
                      std::to_string(static_cast<int64_t>(p[i])) + " -> " +
                      std::to_string(static_cast<int64_t>(p[i + 1])) + ")");
  if (p[num_seqs] != total)
    return fail(Status::kErrorInvalidCuSeqlens,
                "cu_seqlens[num_seqs] = " + std::to_string(static_cast<int64_t>(p[num_seqs])) +
                    " must equal the total token count T = " + std::to_string(total));
  return Result::success();
}

inline Result check_shape_and_options(const ProblemShape& s, const SolverOptions& o, Backend b) {
  if (s.batch < 1) return fail(Status::kErrorInvalidShape, "shape.batch must be >= 1 (got " + std::to_string(s.batch) + ")");
  if (s.seqlen < 1) return fail(Status::kErrorInvalidShape, "shape.seqlen must be >= 1 (got " + std::to_string(s.seqlen) + ")");
  if (s.heads_q < 1) return fail(Status::kErrorInvalidShape, "shape.heads_q must be >= 1 (got " + std::to_string(s.heads_q) + ")");
  if (s.heads_kv < 1) return fail(Status::kErrorInvalidShape, "shape.heads_kv must be >= 1 (got " + std::to_string(s.heads_kv) + ")");
  if (s.head_dim < 1) return fail(Status::kErrorInvalidShape, "shape.head_dim must be >= 1 (got " + std::to_string(s.head_dim) + ")");
  if (s.heads_q % s.heads_kv != 0)
    return fail(Status::kErrorHeadGrouping, "shape.heads_q (" + std::to_string(s.heads_q) +
                                                ") is not a multiple of shape.heads_kv (" +
                                                std::to_string(s.heads_kv) + ")");
  if (b == Backend::kCuda) {
    if (s.head_dim != 64 && s.head_dim != 128)
      return fail(Status::kErrorUnsupportedHeadDim,
                  "shape.head_dim = " + std::to_string(s.head_dim) +
                      " is not available on the CUDA backend (supported: 64, 128)");
  } else if (s.head_dim > 512) {
    return fail(Status::kErrorUnsupportedHeadDim,
                "shape.head_dim = " + std::to_string(s.head_dim) + " exceeds the reference's limit of 512");
  }
  if (o.num_iter < 0)
    return fail(Status::kErrorInvalidIterationCount,
                "options.num_iter must be >= 0 (got " + std::to_string(o.num_iter) + ")");
  if (!(o.ridge_ratio > 0.0) || !std::isfinite(o.ridge_ratio))
    return fail(Status::kErrorInvalidRidgeRatio,
                "options.ridge_ratio must be finite and > 0 (got " + std::to_string(o.ridge_ratio) + ")");
  if (!std::isfinite(o.scale))
    return fail(Status::kErrorInvalidShape, "options.scale must be finite (0 selects D^-1/2)");
  const int c = o.chunk_size;
  const bool pow2 = c > 0 && (c & (c - 1)) == 0;
  const int lo = b == Backend::kCuda ? 16 : 1, hi = b == Backend::kCuda ? 64 : 1024;
  if (!pow2 || c < lo || c > hi)
    return fail(Status::kErrorInvalidChunkSize,
                "options.chunk_size = " + std::to_string(c) + " must be a power of two in [" +
                    std::to_string(lo) + ", " + std::to_string(hi) + "]");
  if (s.varlen()) {
    const SeqOffsets& cu = s.cu_seqlens;
    if (s.batch != 1)
      return fail(Status::kErrorInvalidShape, "shape.batch must be 1 with cu_seqlens (got " +
                                                  std::to_string(s.batch) + ")");
    if (cu.num_seqs < 1)
      return fail(Status::kErrorInvalidCuSeqlens, "cu_seqlens.num_seqs must be >= 1");
    const int64_t isize = cu.type == IndexType::kInt32 ? 4 : 8;
    if (reinterpret_cast<uintptr_t>(cu.data) % isize != 0)
      return fail(Status::kErrorMisaligned, "cu_seqlens.data is not aligned to its index type");
    const void* host = cu.host_data ? cu.host_data : (b == Backend::kReference ? cu.data : nullptr);
    if (host) {
      if (cu.type == IndexType::kInt32)
        GKA_RETURN_IF_ERROR(check_offsets_values(static_cast<const int32_t*>(host), cu.num_seqs, s.seqlen));
      else
        GKA_RETURN_IF_ERROR(check_offsets_values(static_cast<const int64_t*>(host), cu.num_seqs, s.seqlen));
    }
  }
  return Result::success();
}

// The tensors every entry point reads (spec 2.1), with the options that make some required.
inline Result check_inputs(const ProblemShape& s, const OperatorInputs& in, const SolverOptions& o,
                           Backend b, bool check_initial_states) {
  const int64_t B = s.batch, T = s.seqlen, Hq = s.heads_q, Hkv = s.heads_kv, D = s.head_dim;
  const int64_t N = s.num_states();
  const auto tok = token_dtypes(b);
  const auto wide = wide_dtypes(b);
  GKA_RETURN_IF_ERROR(check_token("q", in.q, true, B, T, Hq, D, tok, b, false));
  GKA_RETURN_IF_ERROR(check_token("k", in.k, true, B, T, Hkv, D, {in.q.dtype}, b, false));
  GKA_RETURN_IF_ERROR(check_token("v", in.v, true, B, T, Hkv, D, {in.q.dtype}, b, false));
  GKA_RETURN_IF_ERROR(check_token("alpha", in.alpha, false, B, T, Hq, 1, tok, b, false));
  GKA_RETURN_IF_ERROR(check_token("g", in.g, false, B, T, Hq, 1, wide, b, false));
  GKA_RETURN_IF_ERROR(check_token("f", in.f, false, B, T, Hq, 1, wide, b, false));
  GKA_RETURN_IF_ERROR(check_token("beta", in.beta, o.fuse_beta, B, T, Hq, 1, tok, b, false));
  if (check_initial_states) {
    GKA_RETURN_IF_ERROR(check_state("h0", in.h0, false, N, Hq, D, wide, b, false));
    GKA_RETURN_IF_ERROR(check_state("s0", in.s0, false, N, Hq, D, wide, b, false));
  }
  return Result::success();
}

template <class Index>
inline Result check_slot_values(const char* name, const Index* p, int64_t n, int64_t num_slots,
                                int64_t pad) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(p[i]);
    if (v == pad) continue;
    if (v < 0 || v >= num_slots)
      return fail(Status::kErrorInvalidSlot, std::string(name) + "[" + std::to_string(i) + "] = " +
                                                 std::to_string(v) + " is outside the pool [0, " +
                                                 std::to_string(num_slots) + ")");
  }
  return Result::success();
}

inline Result check_slots(const char* name, const void* p, IndexType t, int64_t n, int64_t num_slots,
                          int64_t pad) {
  if (!p) return Result::success();
  if (t == IndexType::kInt32) return check_slot_values(name, static_cast<const int32_t*>(p), n, num_slots, pad);
  return check_slot_values(name, static_cast<const int64_t*>(p), n, num_slots, pad);
}


// The CUDA kernels read and write the pool in one pass, so a slot written by one sequence must not
// be read or written by another (the reference reads everything first and allows it).
template <class Index>
inline Result check_slot_aliasing(const Index* rd, const Index* wr, int64_t n, int64_t pad) {
  std::vector<std::pair<int64_t, int64_t>> writes;  // (slot, sequence)
  std::vector<std::pair<int64_t, int64_t>> reads;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = static_cast<int64_t>(rd[i]);
    if (r == pad) continue;  // skipped sequence (decode) or zero start (forward): reads nothing
    reads.push_back({r, i});
    const int64_t w = wr ? static_cast<int64_t>(wr[i]) : r;
    if (w != pad) writes.push_back({w, i});
  }
  std::sort(writes.begin(), writes.end());
  std::sort(reads.begin(), reads.end());
  for (size_t i = 1; i < writes.size(); ++i)
    if (writes[i].first == writes[i - 1].first)
      return fail(Status::kErrorInvalidSlot, "pool.write_slots: sequences " + std::to_string(writes[i - 1].second) +
                                                 " and " + std::to_string(writes[i].second) + " both write slot " +
                                                 std::to_string(writes[i].first) + " (not allowed on the CUDA backend)");
  for (const auto& w : writes) {
    auto it = std::lower_bound(reads.begin(), reads.end(), std::make_pair(w.first, int64_t{-1}));
    for (; it != reads.end() && it->first == w.first; ++it)
      if (it->second != w.second)
        return fail(Status::kErrorInvalidSlot, "pool: sequence " + std::to_string(w.second) + " writes slot " +
                                                   std::to_string(w.first) + " that sequence " +
                                                   std::to_string(it->second) +
                                                   " reads (not allowed on the CUDA backend: one pass over the pool)");
  }
  return Result::success();
}

// A state pool (decode, or the forward's optional pool) for N sequences.
inline Result check_pool(const StatePool& p, int64_t N, int64_t Hq, int64_t D, Backend b) {
  if (p.num_slots < 1)
    return fail(Status::kErrorInvalidShape, "pool.num_slots must be >= 1 (got " + std::to_string(p.num_slots) + ")");
  GKA_RETURN_IF_ERROR(check_state("pool.h", p.h, true, p.num_slots, Hq, D, wide_dtypes(b), b, true));
  const std::initializer_list<DType> s_cuda = {DType::kFP32, DType::kBF16};
  GKA_RETURN_IF_ERROR(check_state("pool.s", p.s, true, p.num_slots, Hq, D,
                                  b == Backend::kCuda ? s_cuda : wide_dtypes(b), b, true));
  if (!p.read_slots) return fail(Status::kErrorNullPointer, "pool.read_slots is null (required)");
  if (p.slot_type != IndexType::kInt32 && p.slot_type != IndexType::kInt64)
    return fail(Status::kErrorInvalidSlot, "pool.slot_type is not int32 or int64");
  const void* host_read = p.host_read_slots ? p.host_read_slots : (b == Backend::kReference ? p.read_slots : nullptr);
  const void* host_write = p.host_write_slots ? p.host_write_slots : (b == Backend::kReference ? p.write_slots : nullptr);
  GKA_RETURN_IF_ERROR(check_slots("pool.read_slots", host_read, p.slot_type, N, p.num_slots, p.pad_slot));
  GKA_RETURN_IF_ERROR(check_slots("pool.write_slots", host_write, p.slot_type, N, p.num_slots, p.pad_slot));
  if (b == Backend::kCuda && host_read && (host_write || !p.write_slots)) {
    if (p.slot_type == IndexType::kInt32)
      return check_slot_aliasing(static_cast<const int32_t*>(host_read), static_cast<const int32_t*>(host_write), N, p.pad_slot);
    return check_slot_aliasing(static_cast<const int64_t*>(host_read), static_cast<const int64_t*>(host_write), N, p.pad_slot);
  }
  return Result::success();
}

}  // namespace detail

inline Result validate(const ForwardArgs& a, Backend b) {
  using namespace detail;
  const ProblemShape& s = a.shape;
  GKA_RETURN_IF_ERROR(check_shape_and_options(s, a.options, b));
  GKA_RETURN_IF_ERROR(check_inputs(s, a.in, a.options, b, true));
  const int64_t B = s.batch, T = s.seqlen, Hq = s.heads_q, D = s.head_dim, N = s.num_states();
  GKA_RETURN_IF_ERROR(check_token("o", a.o, true, B, T, Hq, D, token_dtypes(b), b, true));
  GKA_RETURN_IF_ERROR(check_token("x", a.x, false, B, T, Hq, D, token_dtypes(b), b, true));
  GKA_RETURN_IF_ERROR(check_token("nu", a.nu, false, B, T, Hq, 1, wide_dtypes(b), b, true));
  GKA_RETURN_IF_ERROR(check_state("ht", a.ht, false, N, Hq, D, wide_dtypes(b), b, true));
  GKA_RETURN_IF_ERROR(check_state("st", a.st, false, N, Hq, D, wide_dtypes(b), b, true));
  // Checked on both backends so that one ForwardArgs is valid everywhere; the reference ignores it.
  GKA_RETURN_IF_ERROR(check_dtype("chunk_state_dtype", a.chunk_state_dtype, {DType::kFP32, DType::kBF16}));
  if (a.pool.present()) {
    if (a.in.h0.present() || a.in.s0.present() || a.ht.present() || a.st.present())
      return fail(Status::kErrorInvalidShape, "pool: in.h0, in.s0, ht and st must be absent when a pool is given");
    GKA_RETURN_IF_ERROR(check_pool(a.pool, N, Hq, D, b));
  }
  return Result::success();
}

inline Result validate(const BackwardArgs& a, Backend b) {
  using namespace detail;
  const ProblemShape& s = a.shape;
  GKA_RETURN_IF_ERROR(check_shape_and_options(s, a.options, b));
  GKA_RETURN_IF_ERROR(check_inputs(s, a.in, a.options, b, true));
  const int64_t B = s.batch, T = s.seqlen, Hq = s.heads_q, Hkv = s.heads_kv, D = s.head_dim;
  const int64_t N = s.num_states();
  const auto tok = token_dtypes(b);
  const auto wide = wide_dtypes(b);
  GKA_RETURN_IF_ERROR(check_token("x", a.x, false, B, T, Hq, D, tok, b, false));
  GKA_RETURN_IF_ERROR(check_token("nu", a.nu, false, B, T, Hq, 1, wide, b, false));
  GKA_RETURN_IF_ERROR(check_token("d_o", a.d_o, true, B, T, Hq, D, tok, b, false));
  GKA_RETURN_IF_ERROR(check_state("d_ht", a.d_ht, false, N, Hq, D, wide, b, false));
  GKA_RETURN_IF_ERROR(check_state("d_st", a.d_st, false, N, Hq, D, wide, b, false));
  GKA_RETURN_IF_ERROR(check_token("dq", a.dq, true, B, T, Hq, D, tok, b, true));
  GKA_RETURN_IF_ERROR(check_token("dk", a.dk, true, B, T, Hkv, D, tok, b, true));
  GKA_RETURN_IF_ERROR(check_token("dv", a.dv, true, B, T, Hkv, D, tok, b, true));
  GKA_RETURN_IF_ERROR(check_token("dalpha", a.dalpha, a.in.alpha.present(), B, T, Hq, 1, tok, b, true));
  GKA_RETURN_IF_ERROR(check_token("dg", a.dg, a.in.g.present(), B, T, Hq, 1, wide, b, true));
  GKA_RETURN_IF_ERROR(check_token("df", a.df, a.in.f.present(), B, T, Hq, 1, wide, b, true));
  GKA_RETURN_IF_ERROR(check_token("dbeta", a.dbeta, a.options.fuse_beta, B, T, Hq, 1, tok, b, true));
  GKA_RETURN_IF_ERROR(check_state("dh0", a.dh0, a.in.h0.present(), N, Hq, D, wide, b, true));
  GKA_RETURN_IF_ERROR(check_state("ds0", a.ds0, a.in.s0.present(), N, Hq, D, wide, b, true));
  // Checked on both backends so that one BackwardArgs is valid everywhere; the reference ignores them.
  if (a.scan_segments < 0 || a.scan_segments > 4096)
    return fail(Status::kErrorInvalidShape,
                "scan_segments (runs of chunks per sequence) must be in [0, 4096] (0: chosen from the shape), got " + std::to_string(a.scan_segments));
  if (a.forward_workspace != nullptr) {
    GKA_RETURN_IF_ERROR(check_dtype("chunk_state_dtype", a.chunk_state_dtype, {DType::kFP32, DType::kBF16}));
    if (reinterpret_cast<uintptr_t>(a.forward_workspace) % 256 != 0)
      return fail(Status::kErrorMisaligned, "forward_workspace is not 256-byte aligned (a forward's workspace is)");
  }
  return Result::success();
}

inline Result validate(const DecodeArgs& a, Backend b) {
  using namespace detail;
  const ProblemShape& s = a.shape;
  GKA_RETURN_IF_ERROR(check_shape_and_options(s, a.options, b));
  GKA_RETURN_IF_ERROR(check_inputs(s, a.in, a.options, b, false));
  const int64_t B = s.batch, T = s.seqlen, Hq = s.heads_q, D = s.head_dim, N = s.num_states();
  GKA_RETURN_IF_ERROR(check_pool(a.pool, N, Hq, D, b));
  GKA_RETURN_IF_ERROR(check_token("o", a.o, true, B, T, Hq, D, token_dtypes(b), b, true));
  const int64_t total = B * T;  // every token of the call, packed or [N, m]
  GKA_RETURN_IF_ERROR(check_state("inter_h", a.inter_h, false, total, Hq, D, wide_dtypes(b), b, true));
  GKA_RETURN_IF_ERROR(check_state("inter_s", a.inter_s, false, total, Hq, D, wide_dtypes(b), b, true));
  return Result::success();
}

GKA_NAMESPACE_END
