// gka/kernels/backward_params.cuh: what the GPU backward's kernels share: the launch parameters and
// the workspace arrays through which they hand results to each other (spec 4.2-4.7, in the chunked
// schedule of include/gka/reference/head_backward_chunked.h, which they mirror).
//
// Kernel sequence (api/backward.cuh enqueues it):
//   [forward]  x (fp32) and nu into the workspace, when the caller did not save them
//   scan       H-bar_n, S-bar_n (the forward's state_scan_kernel), unless saved by the forward
//   solve      bwd_solve_kernel   (chunk, head): dq~, alpha-mix adjoint, z = CH(A, alpha dq~);
//                                  writes dq, dalpha, ws z, qmix, qdq, w, unu
//   rscan      bwd_reverse_scan   (seq*head, role): R-bar, S^, B~ reverse scans; per-chunk states
//                                  r_end, s_end, b_end and per-sequence r_first, s_first, b_total
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
};

struct BackwardParams {
  tiling::ChunkGeometry geo;
  int64_t heads_q = 0, group = 1;  // group = H_q / H_kv; query head h reads kv head h / group
  // the query heads one launch covers: head0 .. head0 + heads_grid - 1 (heads_grid 0: all heads_q);
  // the solve / GLA / cov grids' y and the reverse scan's x count heads from head0
  int64_t head0 = 0, heads_grid = 0;
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
};

}  // namespace kernels
GKA_NAMESPACE_END
