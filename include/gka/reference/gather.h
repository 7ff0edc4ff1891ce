// gka/reference/gather.h: the Args-level plumbing shared by the reference forward, backward and
// decode drivers. It turns strided tensors of any dtype into contiguous per-(sequence, head) host
// arrays of Real and back:
//
//   for (const SequenceRange& seq : sequence_ranges(shape))       // batch rows or cu_seqlens
//     for (int64_t h = 0; h < shape.heads_q; ++h) {
//       HeadData<Real> data = gather_head<Real>(shape, in, options, seq, h);  // fusions applied
//       ... run a head program on data.inputs() ...
//       scatter_tokens(args.o, seq, h, D, result.o);
//     }
//
// Everything reads host memory (the reference never touches a device pointer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "gka/args.h"
#include "gka/config.h"
#include "gka/numeric/host_convert.h"
#include "gka/reference/head_forward.h"
#include "gka/reference/input_fusions.h"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace reference {

// ---- sequences and heads ----------------------------------------------------------------------

// One independent sequence: state index n (batch row, or varlen sequence), the batch row its
// tokens live in, and its tokens [t0, t0 + length) along T.
struct SequenceRange {
  int64_t n = 0;
  int64_t batch_row = 0;
  int64_t t0 = 0;
  int64_t length = 0;
};

// Element i of a host int32 / int64 index array (cu_seqlens, decode slots).
inline int64_t read_index(const void* data, IndexType type, int64_t i) {
  return type == IndexType::kInt64 ? static_cast<const int64_t*>(data)[i]
                                   : static_cast<int64_t>(static_cast<const int32_t*>(data)[i]);
}

// Every sequence of the problem, in state order: B rows of T tokens, or the cu_seqlens segments of
// the single packed row (empty segments included; they still have initial and final states).
inline std::vector<SequenceRange> sequence_ranges(const ProblemShape& shape) {
  std::vector<SequenceRange> seqs;
  if (!shape.varlen()) {
    for (int64_t b = 0; b < shape.batch; ++b) seqs.push_back({b, b, 0, shape.seqlen});
    return seqs;
  }
  const SeqOffsets& cu = shape.cu_seqlens;
  for (int64_t n = 0; n < cu.num_seqs; ++n) {
    const int64_t begin = read_index(cu.data, cu.type, n), end = read_index(cu.data, cu.type, n + 1);
    seqs.push_back({n, 0, begin, end - begin});
  }
  return seqs;
}

// GQA: query head h reads k and v from kv head h / (H_q / H_kv) (spec 6.1).
inline int64_t kv_head_of(const ProblemShape& shape, int64_t h) { return h / shape.group_size(); }

// ---- token tensors ----------------------------------------------------------------------------

// Rows [length][width] of head `head` of a sequence (width = D for vectors, 1 for scalars).
// An absent tensor gives an empty vector.
template <class Real>
inline std::vector<Real> gather_tokens(const TokenTensor& t, const SequenceRange& seq, int64_t head,
                                       int64_t width) {
  std::vector<Real> rows;
  if (!t.present()) return rows;
  rows.resize(static_cast<size_t>(seq.length * width));
  for (int64_t j = 0; j < seq.length; ++j) {
    const int64_t base = t.offset(seq.batch_row, seq.t0 + j, head);
    for (int64_t i = 0; i < width; ++i)
      rows[j * width + i] = static_cast<Real>(load_as_double(t.data, t.dtype, base + i));
  }
  return rows;
}

// Writes rows [length][width] into head `head` of a sequence, rounded to the tensor's dtype.
// An absent tensor is left alone (optional outputs).
template <class Real>
inline void scatter_tokens(const TokenTensor& t, const SequenceRange& seq, int64_t head, int64_t width,
                           const std::vector<Real>& rows) {
  if (!t.present()) return;
  for (int64_t j = 0; j < seq.length; ++j) {
    const int64_t base = t.offset(seq.batch_row, seq.t0 + j, head);
    for (int64_t i = 0; i < width; ++i)
      store_from_double(t.data, t.dtype, base + i, static_cast<double>(rows[j * width + i]));
  }
}

// ---- D x D states -----------------------------------------------------------------------------

// State (n, head) as a row-major [D][D] array; an absent tensor gives an empty vector.
template <class Real>
inline std::vector<Real> load_state(const StateTensor& s, int64_t n, int64_t head, int64_t D) {
  std::vector<Real> m;
  if (!s.present()) return m;
  m.resize(static_cast<size_t>(D * D));
  const int64_t base = s.offset(n, head);
  for (int64_t i = 0; i < D; ++i)
    for (int64_t j = 0; j < D; ++j)
      m[i * D + j] = static_cast<Real>(load_as_double(s.data, s.dtype, base + i * s.stride_row + j));
  return m;
}

template <class Real>
inline void store_state(const StateTensor& s, int64_t n, int64_t head, int64_t D, const std::vector<Real>& m) {
  if (!s.present()) return;
  const int64_t base = s.offset(n, head);
  for (int64_t i = 0; i < D; ++i)
    for (int64_t j = 0; j < D; ++j)
      store_from_double(s.data, s.dtype, base + i * s.stride_row + j, static_cast<double>(m[i * D + j]));
}

// ---- everything one (sequence, head) program reads ------------------------------------------

// Contiguous copies of the inputs of query head h of one sequence, as the core op sees them (fused
// L2 norm and beta scaling already applied). Empty vectors are absent optional inputs.
template <class Real>
struct HeadData {
  int T = 0, D = 0;
  std::vector<Real> q, k, v;      // [T][D]
  std::vector<Real> alpha, g, f;  // [T]
  std::vector<Real> h0, s0;       // [D][D]

  HeadInputs<Real> inputs() const {
    HeadInputs<Real> in;
    in.T = T;
    in.D = D;
    in.q = q.data();
    in.k = k.data();
    in.v = v.data();
    in.alpha = alpha.empty() ? nullptr : alpha.data();
    in.g = g.empty() ? nullptr : g.data();
    in.f = f.empty() ? nullptr : f.data();
    in.h0 = h0.empty() ? nullptr : h0.data();
    in.s0 = s0.empty() ? nullptr : s0.data();
    return in;
  }
};

// The initial states are read from in.h0 / in.s0 at state index seq.n; decode passes
// read_states = false and fills h0 / s0 from its pool.
template <class Real>
inline HeadData<Real> gather_head(const ProblemShape& shape, const OperatorInputs& in, const SolverOptions& options,
                                  const SequenceRange& seq, int64_t h, bool read_states = true) {
  const int64_t D = shape.head_dim, kv = kv_head_of(shape, h);
  HeadData<Real> data;
  data.T = static_cast<int>(seq.length);
  data.D = static_cast<int>(D);
  data.q = gather_tokens<Real>(in.q, seq, h, D);
  data.k = gather_tokens<Real>(in.k, seq, kv, D);
  data.v = gather_tokens<Real>(in.v, seq, kv, D);
  data.alpha = gather_tokens<Real>(in.alpha, seq, h, 1);
  data.g = gather_tokens<Real>(in.g, seq, h, 1);
  data.f = gather_tokens<Real>(in.f, seq, h, 1);
  if (options.l2norm_qk) {
    l2_normalize_rows(data.q, data.D);
    l2_normalize_rows(data.k, data.D);
  }
  if (options.fuse_beta) {
    const std::vector<Real> beta = gather_tokens<Real>(in.beta, seq, h, 1);
    scale_rows_by_beta(data.k, beta, data.D);
    scale_rows_by_beta(data.v, beta, data.D);
  }
  if (read_states) {
    data.h0 = load_state<Real>(in.h0, seq.n, h, D);
    data.s0 = load_state<Real>(in.s0, seq.n, h, D);
  }
  return data;
}

// Backward of the fusions for query head h of one sequence. On entry dq, dk, dv are gradients with
// respect to what the core op saw (HeadData::q, k, v); on return they are gradients with respect to
// the raw q and to this query head's share of the raw k and v (sum dk, dv over the group for the kv
// head). When options.fuse_beta, dbeta ([T]) is overwritten with d/dbeta_t; otherwise untouched.
template <class Real>
inline void fused_inputs_backward(const ProblemShape& shape, const OperatorInputs& in, const SolverOptions& options,
                                  const SequenceRange& seq, int64_t h, std::vector<Real>& dq, std::vector<Real>& dk,
                                  std::vector<Real>& dv, std::vector<Real>& dbeta) {
  if (!options.l2norm_qk && !options.fuse_beta) return;
  const int64_t D = shape.head_dim, kv = kv_head_of(shape, h);
  const int d = static_cast<int>(D);
  const std::vector<Real> raw_k = gather_tokens<Real>(in.k, seq, kv, D);
  std::vector<Real> unit_k = raw_k;  // k after the L2 norm, before beta
  if (options.l2norm_qk) l2_normalize_rows(unit_k, d);
  if (options.fuse_beta) {
    const std::vector<Real> beta = gather_tokens<Real>(in.beta, seq, h, 1);
    const std::vector<Real> raw_v = gather_tokens<Real>(in.v, seq, kv, D);
    dbeta.assign(beta.size(), Real(0));
    scale_rows_by_beta_backward(unit_k, beta, dk, dbeta, d);
    scale_rows_by_beta_backward(raw_v, beta, dv, dbeta, d);
  }
  if (options.l2norm_qk) {
    l2_normalize_rows_backward(gather_tokens<Real>(in.q, seq, h, D), dq, d);
    l2_normalize_rows_backward(raw_k, dk, d);
  }
}

}  // namespace reference
GKA_NAMESPACE_END
