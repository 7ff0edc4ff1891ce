// gka/kernels/backward_params.cuh: what the GPU backward's kernels share: the launch parameters and
// the workspace arrays through which they hand results to each other (spec 4.2-4.7, in the chunked
// schedule of include/gka/reference/head_backward_chunked.h, which they mirror).
//
// Kernel sequence (api/backward.cuh enqueues it):
//   [forward]  x (fp32) and nu into the workspace, when the caller did not save them
//   scan       H-bar_n, S-bar_n (the forward's state_scan_kernel), unless saved by the forward
//   solve      bwd_solve_kernel   (chunk, head): dq~, alpha-mix adjoint, z = CH(A, alpha dq~);
//                                  writes dq, dalpha, ws z, qmix, qdq, w, unu
//   weights    bwd_scan_weights   (chunk, head): the reverse scans' per-chunk key weights -> ws scan_wts
//   rscan      bwd_reverse_scan   (seq*segment*head, role): R-bar, S^, B~ reverse scans; per-chunk
//                                  states r_end, s_end, b_end and per-sequence r_first, s_first,
//                                  b_total (with segments > 1: segment totals, see ScanSegments)
//   carry      bwd_scan_carry     (seq*head, 2 parts), segments > 1 only: the carry into each run
//                                  (S^'s, and G = R + R^T + B~'s for cov) and the per-sequence states
//   gla        bwd_gla_kernel     (chunk, head): GLA dk^S, dv, dG -> ws dk, dv, dg_s
//   cov        bwd_cov_kernel     (chunk, head): Pass D + E + F -> ws dk (+= dk^H), outputs dg / df
//   finish     bwd_finish_kernel  dk, dv summed over the GQA group (fixed order) into the outputs;
//                                  dh0 = -sym(r_first) - b_total / 2; ds0 = s_first
//
// Indexing: token arrays are [tokens][H_q][width] with tokens = B * T (row b * T + t; varlen has
// B = 1), i.e. TokenTensor::contiguous(p, kFP32, T, H_q, width) views. Chunk arrays are
// [chunk_bound][H_q][D][D] indexed by the chunk index of tiling::ChunkGeometry (as the forward's
// chunk states). Sequence arrays are [num_seqs][H_q][D][D]. All workspace arrays are fp32.
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/tiling/chunks.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

struct BackwardWorkspace {
  // per token and query head, width D
  TokenTensor z;     // z_t = A_t^{-1} (alpha_t dq~_t) by the r-step Chebyshev program (0 where nu = 0 or r = 0)
  TokenTensor qmix;  // q~_t = q_t + alpha_t (x_t - q_t)  (= q_t when r = 0)
  TokenTensor dk;    // per query head: GLA part dk^S (gla kernel), then + dk^H (cov kernel)
  TokenTensor dv;    // per query head
  // per token and query head, width 1
  TokenTensor qdq;   // q~_t . dq~_t
  TokenTensor w;     // w_t = 2 u_t / nu_t, u_t = a z_t.x_t (0 without bp_lambda or where nu = 0)
  TokenTensor unu;   // u_t nu_t (0 likewise)
  TokenTensor dg_s;  // the S part of dg: chunk-local reverse cumsum of dG (inter-chunk term included)
  // per chunk and query head, D x D, row-major; "end" = the state after chunk n. Element type TWs
  // of the kernels (kernels/bwd_*: fp32, or bf16 alongside bf16 forward chunk states)
  void* r_end = nullptr;  // R-bar_n = sum_{t after chunk n} e^{F_t - F_end(n)} z_t x_t^T  (+ decayed -dH_T)
  void* s_end = nullptr;  // S^_end(n) = s sum_{t after chunk n} e^{G_t - G_end(n)} q~_t do_t^T (+ decayed dS_T)
  void* b_end = nullptr;  // B~_n = sum_{t after chunk n} e^{F_t - F_end(n)} w_t H_t  (bp_lambda only)
  // per sequence and query head, D x D: the reverse scans' final states
  float* r_first = nullptr;  // R-bar_{-1}
  float* s_first = nullptr;  // S^ before the first chunk (= dS_0)
  float* b_total = nullptr;  // B~ after the loop (bp_lambda only)
  // per chunk, query head and reverse scan: the scans' key weights, decay and c_n
  // ([chunk_bound][H_q][3][kRscanWts], bwd_scan_weights_kernel)
  float* scan_wts = nullptr;
};

// Segment-parallel reverse scans. A scan walks its sequence's chunks one after the other, so a long
// sequence is one long chain: at T = 32768 (B = 2) the three scans have 192 CTAs of 512 chunks
// each, fewer than two per SM. With count > 1 every sequence's chunks are cut into count runs of
// length(n) = ceil(n / count) chunks, each scanned by its own CTAs from zero (the last run from the
// incoming final-state gradients); the per-chunk states they write then miss the state that
// enters their run from the later runs, its carry. bwd_scan_carry_kernel forms the carries from the
// run totals (a short pass over the runs) and the per-sequence states; the GLA / cov kernels add
// factor * carry (chunk_carry()) to the per-chunk states as they stage them. The scans are affine in
// their state, so this is the same sum in another order.
struct ScanSegments {
  int count = 1;
  float* totals = nullptr;       // [num_seqs][count][H_q][3 roles][D][D]: run totals, then carries
  float* seg_decay = nullptr;    // [num_seqs][count][H_q][2]: a run's total decay for f (0) and g (1)
  float* chunk_decay = nullptr;  // [chunk_bound][H_q][2]: the decay from the run's end to the state after chunk n

  GKA_HOST_DEVICE int64_t length(int64_t nchunks) const { return (nchunks + count - 1) / count; }
  GKA_HOST_DEVICE int64_t used(int64_t nchunks) const {  // runs holding at least one chunk
    return nchunks > 0 ? (nchunks + length(nchunks) - 1) / length(nchunks) : 0;
  }
  // index of a run total / carry (D x D floats) in totals; check_backward_args keeps it below 2^31
  GKA_HOST_DEVICE int64_t total_index(int64_t seq, int64_t run, int64_t h, int64_t heads_q, int role) const {
    return ((seq * count + run) * heads_q + h) * 3 + role;
  }
};

// Which reverse scans one bwd_reverse_scan_kernel launch runs (its grid's y): all three (y = 3), S^
// alone (y = 1: what the GLA kernel needs), or R-bar and B~ (y = 2: what the cov kernel needs), so
// that with a second stream the GLA kernel can start once S^ is done (api/backward.cuh).
enum RscanRoles : int { kRscanAll = 0, kRscanSHat = 1, kRscanCov = 2 };

struct BackwardParams {
  tiling::ChunkGeometry geo;
  int64_t heads_q = 0, group = 1;  // group = H_q / H_kv; query head h reads kv head h / group
  TokenTensor q, k, v, alpha;      // the operator's inputs (fusions already applied: see api/backward.cuh)
  TokenTensor x, nu, d_o;          // saved x (any float dtype), nu (fp32), incoming do
  gating::Gate gate_h, gate_s;     // f (H) and g (S) log-decays; f = g when f is absent
  bool f_given = false;            // f passed separately: dg and df are separate outputs, else dg = dg^S + df^H
  int num_iter = 30;
  float ridge = 0.02f;             // a
  float scale = 1.f;               // s
  bool bp_lambda = true;
  const void* states_h = nullptr;  // H-bar_n [chunk_bound][H_q][D][D], element type TState of the kernel
  const void* states_s = nullptr;  // S-bar_n
  StateTensor d_ht, d_st;          // optional incoming final-state gradients (fp32)
  TokenTensor dq, dalpha;          // outputs written by the solve kernel (dalpha optional)
  TokenTensor dg, df;              // outputs written by the cov kernel (each optional)
  StateTensor dh0, ds0;            // outputs written by the finish kernel (each optional)
  TokenTensor dk_out, dv_out;      // outputs: the finish kernel's group sum writes them, or, with
                                   // direct_dkv, GLA (dv) and cov (dk) do
  bool direct_dkv = false;         // the host sets it for group == 1; false keeps dk^S + dk^H, dv in
                                   // ws (what the per-kernel tests read)
  BackwardWorkspace ws;
  ScanSegments seg;
  int rscan_roles = kRscanAll;  // RscanRoles of a reverse-scan launch
};

// What the per-chunk states of chunk cidx miss under a segmented scan: factor * the carry in
// slot s of its run, at p.seg.totals + (index + s) * D * D (bwd_scan_carry_kernel: slot 1 holds
// S^'s carry, slot 2 that of G = R + R^T (+ B~)); index < 0 when there is nothing to add (one run,
// or the chunk is in its sequence's last run). Two registers, which the GLA and cov kernels keep
// through their whole body; factor is the decay with f (g_decay false) or g (true).
struct ChunkCarry {
  int index = -1;
  float factor = 0.f;
};
template <int D>
GKA_DEVICE inline ChunkCarry chunk_carry(const BackwardParams& p, int64_t cidx, const tiling::ChunkEntry& ce,
                                         int64_t h, bool g_decay) {
  ChunkCarry cc;
  if (p.seg.count <= 1) return cc;
  const tiling::SeqEntry se = p.geo.sequence(ce.seq);
  const int64_t nchunks = (se.len + p.geo.chunk - 1) / p.geo.chunk;
  const int64_t run = (ce.t0 - se.t0) / p.geo.chunk / p.seg.length(nchunks);
  if (run + 1 >= p.seg.used(nchunks)) return cc;
  cc.index = static_cast<int>(p.seg.total_index(ce.seq, run, h, p.heads_q, 0));
  cc.factor = p.seg.chunk_decay[(cidx * p.heads_q + h) * 2 + (g_decay ? 1 : 0)];
  return cc;
}
// The carry's D x D floats in slot s (1: S^, 2: G; cc.index >= 0).
template <int D>
GKA_DEVICE inline const float* carry_ptr(const BackwardParams& p, const ChunkCarry& cc, int s) {
  return p.seg.totals + (static_cast<int64_t>(cc.index) + s) * D * D;
}

}  // namespace kernels
GKA_NAMESPACE_END
