// gka/reference/operator.h: the host reference behind the public ForwardArgs / DecodeArgs, on host
// pointers. Inputs of any dtype are read into Real (double for the oracle, float to compare) and
// every output is written in its own dtype. One (sequence, head) at a time:
//
//   forward: gather -> forward_sequential or forward_chunked -> scatter o (x, nu) and ht, st
//   decode : states from the pool slots -> forward_sequential token by token -> o, optional
//            per-token states, final states back to the pool
//
// Decode is the forward itself with h0 / s0 taken from the pool, so prefill followed by decode
// equals one forward over the concatenated tokens.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "gka/args.h"
#include "gka/config.h"
#include "gka/host/validate.h"
#include "gka/reference/gather.h"
#include "gka/reference/head_chunked.h"
#include "gka/reference/head_forward.h"
#include "gka/status.h"

GKA_NAMESPACE_BEGIN
namespace reference {

// kSequential: token by token (spec 2.2). kChunked: the tiled program of spec 3, chunk length
// options.chunk_size; Chebyshev only.
enum class Schedule { kSequential, kChunked };

struct ReferenceOptions {
  SolveMethod method = SolveMethod::kChebyshev;  // kExact: Cholesky solve, for error analysis
  Schedule schedule = Schedule::kSequential;
};

inline SolverParams solver_params(const SolverOptions& o, int64_t D, SolveMethod method) {
  SolverParams p;
  p.num_iter = o.num_iter;
  p.ratio = o.ridge_ratio;
  p.scale = o.resolved_scale(D);
  p.method = method;
  return p;
}

// Forward of the whole problem (spec 2, 3, 6, 12). Writes o and, when present, x, nu, ht, st.
// args.chunk_state_dtype is validated but ignored: every state here is kept in Real.
template <class Real>
inline Result forward(const ForwardArgs& args, const ReferenceOptions& ref = {}) {
  GKA_RETURN_IF_ERROR(validate(args, Backend::kReference));
  const bool chunked = ref.schedule == Schedule::kChunked;
  if (chunked && ref.method == SolveMethod::kExact)
    return Result(Status::kErrorNotSupported,
                  "the exact solve needs H_t and is available with Schedule::kSequential only");
  const ProblemShape& shape = args.shape;
  const int64_t D = shape.head_dim;
  const SolverParams p = solver_params(args.options, D, ref.method);
  // With a pool (spec 12.10): initial states from read_slots[n] (zero at pad_slot or without
  // has_initial_state[n]); final states to write_slots[n] (not at pad_slot), after every read.
  const StatePool& pool = args.pool;
  struct FinalState {
    int64_t slot, head;
    std::vector<Real> H, S;
  };
  std::vector<FinalState> finals;
  for (const SequenceRange& seq : sequence_ranges(shape)) {
    int64_t read = pool.pad_slot, write = pool.pad_slot;
    bool from_pool = false;
    if (pool.present()) {
      read = read_index(pool.read_slots, pool.slot_type, seq.n);
      write = pool.write_slots ? read_index(pool.write_slots, pool.slot_type, seq.n) : read;
      from_pool = read != pool.pad_slot && (!pool.has_initial_state || pool.has_initial_state[seq.n] != 0);
    }
    for (int64_t h = 0; h < shape.heads_q; ++h) {
      HeadData<Real> data = gather_head<Real>(shape, args.in, args.options, seq, h);
      if (from_pool) {
        data.h0 = load_state<Real>(pool.h, read, h, D);
        data.s0 = load_state<Real>(pool.s, read, h, D);
      }
      const HeadForward<Real> out = chunked ? forward_chunked(data.inputs(), p, args.options.chunk_size)
                                            : forward_sequential(data.inputs(), p);
      scatter_tokens(args.o, seq, h, D, out.o);
      scatter_tokens(args.x, seq, h, D, out.x);
      scatter_tokens(args.nu, seq, h, 1, out.nu);
      store_state(args.ht, seq.n, h, D, out.HT);
      store_state(args.st, seq.n, h, D, out.ST);
      if (pool.present() && write != pool.pad_slot) finals.push_back({write, h, out.HT, out.ST});
    }
  }
  for (const FinalState& fs : finals) {
    store_state(pool.h, fs.slot, fs.head, D, fs.H);
    store_state(pool.s, fs.slot, fs.head, D, fs.S);
  }
  return Result::success();
}

// Decode m >= 1 tokens per sequence from the state pool (spec 5, 12.1, 12.10).
//  * A sequence whose read slot equals pool.pad_slot is skipped entirely (o left untouched).
//  * has_initial_state[n] == 0 starts sequence n from zero states instead of its read slot.
//  * Final states go to write_slots[n] (read_slots[n] when write_slots is null); a write slot equal
//    to pad_slot is not written. Every read happens before any write, so slots may be shared.
//  * inter_h / inter_s, when present, receive the states after every token, at the token's index
//    in the call (batch_row * T + t).
template <class Real>
inline Result decode(const DecodeArgs& args, const ReferenceOptions& ref = {}) {
  GKA_RETURN_IF_ERROR(validate(args, Backend::kReference));
  const ProblemShape& shape = args.shape;
  const StatePool& pool = args.pool;
  const int64_t D = shape.head_dim;
  const SolverParams p = solver_params(args.options, D, ref.method);

  struct FinalState {
    int64_t slot, head;
    std::vector<Real> H, S;
  };
  std::vector<FinalState> finals;
  for (const SequenceRange& seq : sequence_ranges(shape)) {
    const int64_t read = read_index(pool.read_slots, pool.slot_type, seq.n);
    if (read == pool.pad_slot) continue;
    const int64_t write = pool.write_slots ? read_index(pool.write_slots, pool.slot_type, seq.n) : read;
    const bool from_pool = !pool.has_initial_state || pool.has_initial_state[seq.n] != 0;
    for (int64_t h = 0; h < shape.heads_q; ++h) {
      HeadData<Real> data = gather_head<Real>(shape, args.in, args.options, seq, h, /*read_states=*/false);
      std::vector<Real> H = from_pool ? load_state<Real>(pool.h, read, h, D) : std::vector<Real>(D * D, Real(0));
      std::vector<Real> S = from_pool ? load_state<Real>(pool.s, read, h, D) : std::vector<Real>(D * D, Real(0));
      std::vector<Real> o(static_cast<size_t>(seq.length * D));
      // One token per call of the forward: the same arithmetic as a single call over all tokens,
      // and it exposes the state after every token.
      for (int64_t j = 0; j < seq.length; ++j) {
        HeadInputs<Real> one = data.inputs();
        one.T = 1;
        one.q += j * D;
        one.k += j * D;
        one.v += j * D;
        if (one.alpha) one.alpha += j;
        if (one.g) one.g += j;
        if (one.f) one.f += j;
        one.h0 = H.data();
        one.s0 = S.data();
        HeadForward<Real> step = forward_sequential(one, p);
        std::copy(step.o.begin(), step.o.end(), o.begin() + j * D);
        H = std::move(step.HT);
        S = std::move(step.ST);
        const int64_t token = seq.batch_row * shape.seqlen + seq.t0 + j;
        store_state(args.inter_h, token, h, D, H);
        store_state(args.inter_s, token, h, D, S);
      }
      scatter_tokens(args.o, seq, h, D, o);
      if (write != pool.pad_slot) finals.push_back({write, h, std::move(H), std::move(S)});
    }
  }
  for (const FinalState& fs : finals) {
    store_state(pool.h, fs.slot, fs.head, D, fs.H);
    store_state(pool.s, fs.slot, fs.head, D, fs.S);
  }
  return Result::success();
}

}  // namespace reference
GKA_NAMESPACE_END
