// gka/args.h: the argument structs of the public entry points (forward, backward, decode).
//
// Shapes (one (batch row or sequence, head) pair is independent of every other):
//   q, o, dq                  [B, T, H_q,  D]
//   k, v, dk, dv              [B, T, H_kv, D]   query head h reads kv head h / (H_q / H_kv)
//   alpha, g, f, beta, nu     [B, T, H_q]       per-token scalars
//   h0, s0, ht, st, dh0, ...  [N, H_q, D, D]    N = B, or num_seqs with cu_seqlens (then B == 1)
// All strides are in elements, int64. See docs/api.md for every argument.
#pragma once

#include <cmath>
#include <cstdint>

#include "gka/config.h"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN

struct ProblemShape {
  int64_t batch = 1;     // B; must be 1 when cu_seqlens is given
  int64_t seqlen = 0;    // T; total packed tokens when cu_seqlens is given
  int64_t heads_q = 0;   // H_q: heads of q, alpha, g, f, beta, o and of the states
  int64_t heads_kv = 0;  // H_kv: heads of k and v; H_q % H_kv == 0
  int64_t head_dim = 0;  // D (the same for q, k and v)
  SeqOffsets cu_seqlens; // optional varlen boundaries

  bool varlen() const { return cu_seqlens.present(); }
  int64_t num_states() const { return varlen() ? cu_seqlens.num_seqs : batch; }
  int64_t group_size() const { return heads_kv > 0 ? heads_q / heads_kv : 0; }
};

struct SolverOptions {
  int num_iter = 30;          // r Chebyshev iterations; 0 = no solve (x = q), H still advances
  double ridge_ratio = 0.02;  // a in lambda_t = a * ||H_t||_F; must be > 0
  double scale = 0.0;         // read-out scale s; 0 selects D^-1/2
  int chunk_size = 64;        // C for the chunk-wise kernels (power of two, 16..64)
  bool l2norm_qk = false;     // fuse q <- q/(||q||+1e-6), k <- k/(||k||+1e-6) (spec 12.3)
  bool fuse_beta = false;     // fuse k <- (beta+1e-6) k, v <- (beta+1e-6) v with beta per query head

  double resolved_scale(int64_t D) const {
    return scale != 0.0 ? scale : 1.0 / std::sqrt(static_cast<double>(D));
  }
};

// Everything the operator reads, shared by forward, backward and decode.
struct OperatorInputs {
  TokenTensor q;      // [B,T,H_q,D]  bf16 | fp16 | fp32 (| fp64 on the reference)
  TokenTensor k;      // [B,T,H_kv,D] same dtype as q
  TokenTensor v;      // [B,T,H_kv,D] same dtype as q
  TokenTensor alpha;  // [B,T,H_q] optional; absent means alpha = 1
  TokenTensor g;      // [B,T,H_q] fp32 log-decay of S (<= 0); absent means no decay
  TokenTensor f;      // [B,T,H_q] fp32 log-decay of H; absent means f = g
  TokenTensor beta;   // [B,T,H_q] read only when SolverOptions::fuse_beta
  StateTensor h0;     // [N,H_q,D,D] fp32 optional initial covariance (symmetric PSD)
  StateTensor s0;     // [N,H_q,D,D] fp32 optional initial GLA state S[key][value]
};

// A pool of per-request states for serving. Slot i of the pool holds H at h.offset(i, head).
// A write slot equal to pad_slot is not written. The CUDA backend reads and writes the pool in one
// pass: no sequence may write a slot another sequence reads, nor two sequences the same slot.
struct StatePool {
  StateTensor h;                    // [num_slots, H_q, D, D] fp32
  StateTensor s;                    // [num_slots, H_q, D, D] fp32 (bf16 allowed on the GPU)
  int64_t num_slots = 0;
  const void* read_slots = nullptr;   // [num_seqs] slot each sequence starts from
  const void* write_slots = nullptr;  // [num_seqs] slot each sequence ends in; null = read_slots
  IndexType slot_type = IndexType::kInt32;
  int64_t pad_slot = -1;              // decode: sequences whose read slot equals this are skipped;
                                      // forward: such a sequence starts from zero states
  const uint8_t* has_initial_state = nullptr;  // optional [num_seqs]; 0 = start from zero states
  const void* host_read_slots = nullptr;   // optional host copies, for validation only
  const void* host_write_slots = nullptr;

  bool present() const { return h.data != nullptr; }
};

struct ForwardArgs {
  ProblemShape shape;
  OperatorInputs in;
  SolverOptions options;
  TokenTensor o;      // out [B,T,H_q,D], dtype of q
  StateTensor ht;     // out, optional [N,H_q,D,D] fp32 final covariance
  StateTensor st;     // out, optional [N,H_q,D,D] fp32 final GLA state
  TokenTensor x;      // out, optional [B,T,H_q,D] the solve x_t (saved for the backward)
  TokenTensor nu;     // out, optional [B,T,H_q] fp32 ||H_t||_F (saved for the backward)
  // GPU forward only; the reference ignores it (its chunk states stay in its compute type Real).
  DType chunk_state_dtype = DType::kFP32;  // workspace H̄_n/S̄_n: fp32 (default) or bf16 (half the workspace and traffic)
  // Optional (used when pool.present()): initial states from pool slot read_slots[n] and final
  // states into write_slots[n], so prefill -> decode -> decode ... runs without copies. Excludes
  // in.h0 / in.s0 / ht / st.
  StatePool pool;
};

struct BackwardArgs {
  ProblemShape shape;
  OperatorInputs in;
  SolverOptions options;
  bool bp_lambda = true;  // differentiate through lambda_t = a ||H_t||_F (false: lambda constant)
  TokenTensor x;          // in, optional: x saved by the forward (recomputed when absent)
  TokenTensor nu;         // in, optional: nu saved by the forward (recomputed when absent)
  TokenTensor d_o;        // in [B,T,H_q,D] gradient of o
  StateTensor d_ht;       // in, optional [N,H_q,D,D] gradient of the final H_T
  StateTensor d_st;       // in, optional [N,H_q,D,D] gradient of the final S_T
  TokenTensor dq;         // out [B,T,H_q,D] (w.r.t. the raw q when l2norm_qk)
  TokenTensor dk;         // out [B,T,H_kv,D] summed over each kv group
  TokenTensor dv;         // out [B,T,H_kv,D]
  TokenTensor dalpha;     // out, required when alpha is given [B,T,H_q]
  TokenTensor dg;         // out, required when g is given [B,T,H_q]; total gradient when f is absent
  TokenTensor df;         // out, required when f is given [B,T,H_q]
  TokenTensor dbeta;      // out, required when fuse_beta [B,T,H_q]
  StateTensor dh0;        // out, required when h0 is given; symmetrised
  StateTensor ds0;        // out, required when s0 is given
  // GPU backward only. The workspace of the forward call on the same arguments, still intact: the
  // backward then reads the chunk states H-bar_n / S-bar_n from it (stored in chunk_state_dtype, as
  // that forward's ForwardArgs::chunk_state_dtype) instead of recomputing them. Null: recompute.
  const void* forward_workspace = nullptr;
  DType chunk_state_dtype = DType::kFP32;
  // GPU backward only, optional: a second CUDA stream (a cudaStream_t; kept as void* so this header
  // needs no CUDA). The backward then runs the reverse scans that only the covariance adjoint needs
  // on it, while the call's stream runs the S^ scan and the GLA adjoint, so that the scans' chain
  // through a long sequence shares the GPU with compute-bound work. Everything still starts after
  // and finishes before the work on the main stream (event fork / join, CUDA-graph capturable);
  // results are bitwise those of the one-stream call. Ignored when it is the call's own stream.
  void* overlap_stream = nullptr;
  // GPU backward only: how many runs of chunks each sequence's reverse scans are cut into, each
  // scanned by its own CTAs (a long sequence is otherwise one long chain; docs/gpu-backward.md).
  // 0 (default): chosen from the shape; 1: one chain per sequence. Changes rounding, not the sums.
  int scan_segments = 0;
};

// Advance m >= 1 tokens per sequence from states kept in a pool (spec 5, 12.10).
// Tokens are laid out like a forward: [N, m, H, D] (shape.batch = N, shape.seqlen = m) or packed
// [1, total, H, D] with shape.cu_seqlens giving per-sequence token counts.
struct DecodeArgs {
  ProblemShape shape;
  OperatorInputs in;        // h0/s0 are ignored: the pool provides the states
  SolverOptions options;
  StatePool pool;           // in/out
  TokenTensor o;            // out [B,T,H_q,D]
  StateTensor inter_h;      // out, optional [total_tokens, H_q, D, D] H after every token (rollback)
  StateTensor inter_s;      // out, optional [total_tokens, H_q, D, D] S after every token
};

GKA_NAMESPACE_END
