// gka/kernels/bwd_solve_kernel.cuh: the backward's per-chunk adjoint solve (hopper-design.md 6.4
// B2), the adjoint twin of solve_readout_kernel: the GLA adjoint's dq~ (spec 4.2 step 3), the
// alpha-mix adjoint (spec 4.3) and z = CH(A, alpha dq~) by the forward's chunked Chebyshev program
// with the forward's nu (spec 4.4), in the schedule of reference/head_backward_chunked.h
// (gla_adjoint_chunked's dq~, backward_chunked's mix adjoint, solve_adjoint_chunked).
//
// Per (chunk, query head h), kv head h / group:
//   dq~ = s [diag(e^G) (dO S-bar^T) + ((dO V^T) o L^g) K]       (S-bar stored [key][value])
//   q~  = q + alpha (x - q)  (q when r = 0);  dalpha = dq~ . (x - q)  (0 when r = 0);  dX = alpha dq~
//   z   = CH(A, dX) with the saved nu (0 where nu = 0 or r = 0)
//   dq  = (1 - alpha) dq~ + z  (dq~ when r = 0)
// Writes dq, dalpha (optional) and the fp32 workspace rows z, qmix, qdq = q~ . dq~, and with
// bp_lambda w, unu of grad::ridge_adjoint (else 0), for rows j < len only.
//
// Grid (chunk_bound, H_q), 128 threads = one warpgroup; warp w owns chunk rows 16w .. 16w+15.
// Organisation (tests/gpu/test_bwd_perf_solve.cu, H200, B = 8, T = 8192, H = 16, D = 128, bf16, fp32
// states, r = 30: 9.22 -> 5.40 ms; the forward's solve_readout_kernel 4.81 ms): one CTA per chunk and
// two per SM leave nothing to hide a memory latency, so every global access is issued in batches:
//  * bf16 policy: dO is staged with K and V in one batch (where S-bar lo goes next) and read as A
//    fragments by ldmatrix; S-bar follows (L2-prefetched at entry, as are H-bar and the q / x rows);
//  * the alpha-mix adjoint loads q and x a group of n8 tiles at a time before any store (the stores
//    may alias the loads for all the compiler knows: interleaved, each load waited for the previous
//    store's operands), the epilogue loads its x in one batch; the token dtypes are dispatched once
//    (bwd_solve_detail::Fast for bf16 q / dq and fp32 x, else Any);
//  * dq~ waits out the solve in shared memory (fragment order, V region and the end of the big
//    region), not in the workspace.
// sm_90a: 255 registers, 0 spills (bf16 policy), 98.5 KiB smem: 2 CTAs/SM.
// Precision: dO enters as bf16 A fragments (exact for bf16 inputs; hi + lo under the split policy),
// S-bar as hi + lo (fp32 states), the score tile P as hi + lo: dq~ keeps about 16 bits per operand,
// as the forward's read-out does for q~. The solve uses the forward's policy and backend (wgmma on
// sm_90a for the bf16 policy, solver/chebyshev_rows.cuh).
#pragma once

#include <cstdint>

#include "gka/backward/mix_adjoint.h"
#include "gka/backward/ridge_adjoint.h"
#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/kernels/backward_params.cuh"
#include "gka/kernels/solve_readout_kernel.cuh"  // kSolveWgmma: the same solve backend as the forward
#include "gka/solver/chebyshev_rows.cuh"
#include "gka/solver/chebyshev_tc.cuh"
#include "gka/tiling/chunks.cuh"
#include "gka/tiling/copy.cuh"
#include "gka/tiling/mma.cuh"
#include "gka/tiling/stage.cuh"
#include "gka/tiling/wgmma.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

namespace bwd_solve_detail {
// One element of a per-token scalar output whose dtype is known at run time (dalpha).
GKA_DEVICE inline void store_as(void* base, DType t, int64_t off, float x) {
  switch (t) {
    case DType::kBF16: static_cast<__nv_bfloat16*>(base)[off] = __float2bfloat16_rn(x); break;
    case DType::kFP16: static_cast<__half*>(base)[off] = __float2half_rn(x); break;
    default: static_cast<float*>(base)[off] = x; break;
  }
}
// Token-vector element access with the dtype chosen once per kernel (not per element): Fast is the
// bf16 policy's common case (bf16 q / dq, fp32 x), Any dispatches at run time (the other cases).
struct Fast {};
struct Any {};
GKA_DEVICE inline float2 load_q2(const TokenTensor& t, int64_t off, Fast) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(static_cast<const __nv_bfloat16*>(t.data) + off));
}
GKA_DEVICE inline float2 load_q2(const TokenTensor& t, int64_t off, Any) { return gating::load2_as_float(t.data, t.dtype, off); }
GKA_DEVICE inline float2 load_x2(const TokenTensor& t, int64_t off, Fast) {
  return *reinterpret_cast<const float2*>(static_cast<const float*>(t.data) + off);
}
GKA_DEVICE inline float2 load_x2(const TokenTensor& t, int64_t off, Any) { return gating::load2_as_float(t.data, t.dtype, off); }
GKA_DEVICE inline void store_dq2(const TokenTensor& t, int64_t off, float a, float b, Fast) {
  gating::store2<__nv_bfloat16>(static_cast<__nv_bfloat16*>(t.data) + off, a, b);
}
GKA_DEVICE inline void store_dq2(const TokenTensor& t, int64_t off, float a, float b, Any) {
  gating::store2_from_float(t.data, t.dtype, off, a, b);
}
}  // namespace bwd_solve_detail

constexpr int kBwdSolveThreads = 128;  // one warpgroup
constexpr int kBwdSolveChunk = 64;

template <int D, bool kSplit>
struct BwdSolveSmem {
  static constexpr int kTileKD = kBwdSolveChunk * D * 2;                // one bf16 [C][D] tile
  static constexpr int kTileDD = D * D * 2;                             // one bf16 [D][D] tile
  static constexpr int kMask = kBwdSolveChunk * kBwdSolveChunk * 4;     // M, fp32 in fragment order
  // region "big": S-bar hi + lo while dq~ is formed; then H-bar hi [lo] and M for the solve.
  static constexpr int kBar = 0;
  static constexpr int kM = (kSplit ? 2 : 1) * kTileDD;
  static constexpr int kParkWarp = (D / 8) * 32 * 16;  // one warp's dq~ fragments (float4 per lane and n8 tile)
  static constexpr int kSolveEnd = kM + kMask + (kSplit ? 0 : 2 * kParkWarp);  // bf16 policy: half of dq~ here
  static constexpr int kBigRaw = (kSolveEnd > 2 * kTileDD) ? kSolveEnd : 2 * kTileDD;
  static constexpr int kBigEnd = (kBigRaw + 1023) / 1024 * 1024;
  static constexpr int kK = kBigEnd;                               // K hi [lo]: both phases
  static constexpr int kV = kK + (kSplit ? 2 : 1) * kTileKD;       // V hi [lo]: dq~ only
  static constexpr int kScal = kV + (kSplit ? 2 : 1) * kTileKD;
  static constexpr int kNumScal = 6;  // F, G, nu, u, v, 1/Gamma'
  // bf16 policy: the dO tile is staged where S-bar lo goes (read into registers before S-bar is staged).
  static constexpr int kDo = kBar + kTileDD;
  // dq~ (fp32, fragment order, 8 KiB per warp) is parked in shared memory during the solve: the V
  // region (dead after dq~) and, for the bf16 policy, the end of the big region (past M).
  static constexpr int kPark0 = kV;                                           // warps 0, 1
  static constexpr int kPark1 = kSplit ? kV + 2 * kParkWarp : kM + kMask;      // warps 2, 3
  static_assert(2 * kParkWarp <= kTileKD, "dq~ park must fit");
  // + 1024: the kernel aligns its base to 1024 B (SW128 tiles for wgmma descriptors).
  static constexpr int kBytes = kScal + kNumScal * kBwdSolveChunk * 4 + 1024;
  static_assert(kK % 1024 == 0 && kV % 1024 == 0, "SW128 tiles must stay 1024-byte aligned");
  static_assert(kBytes <= 227 * 1024, "over the sm_90 / sm_80 opt-in shared memory");
};

template <int D, bool kSplit, class TState = float>
__global__ void __launch_bounds__(kBwdSolveThreads, kSplit ? 1 : 2) bwd_solve_kernel(BackwardParams p) {
  using Smem = BwdSolveSmem<D, kSplit>;
  using namespace tiling;
  constexpr int C = kBwdSolveChunk;
  constexpr bool kStateLo = sizeof(TState) == 4;  // bf16 states are exactly their hi part
  constexpr bool kWgmma = kSolveWgmma && !kSplit;
  extern __shared__ __align__(128) uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024u - (tiling::smem_addr(smem_raw) & 1023u)) & 1023u);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, c = lane & 3;
  const int64_t cidx = blockIdx.x, h = blockIdx.y, hk = h / p.group;
  const ChunkEntry ce = p.geo.chunk_entry(cidx);
  if (ce.seq < 0) return;
  const TState* hbar = static_cast<const TState*>(p.states_h) + (cidx * p.heads_q + h) * D * D;
  const TState* sbar = static_cast<const TState*>(p.states_s) + (cidx * p.heads_q + h) * D * D;
  const int64_t b = p.geo.varlen ? 0 : ce.seq;
  const int len = ce.len;
  const int64_t t0 = ce.t0;
  const int r_iter = p.num_iter;
  const bool solve = r_iter > 0;  // uniform over the CTA
  // H-bar is staged only after dq~: have it in L2 by then.
  if (solve) tiling::prefetch_l2_range(hbar, D * D * static_cast<int>(sizeof(TState)), tid, kBwdSolveThreads);
  // S-bar (staged after dO's fragments are read, bf16 policy) and the q / x rows of the alpha-mix
  // adjoint: have them in L2 by then. One token row per thread, rolled: short code.
  tiling::prefetch_l2_range(sbar, D * D * static_cast<int>(sizeof(TState)), tid, kBwdSolveThreads);
  {
    const int t = tid & (C - 1);
    const TokenTensor& tt = tid < C ? p.q : p.x;
    if (t < len && (tid < C || solve)) {
      const int es = dtype_size(tt.dtype);
      const uint8_t* row = static_cast<const uint8_t*>(tt.data) + tt.offset(b, t0 + t, h) * es;
#pragma unroll 1
      for (int l = 0; l < D * es; l += 128) tiling::prefetch_l2(row + l);
    }
  }

  uint8_t* s_hi = smem + Smem::kBar;
  uint8_t* s_lo = s_hi + Smem::kTileDD;
  uint8_t* hb_hi = smem + Smem::kBar;  // after dq~
  uint8_t* hb_lo = hb_hi + Smem::kTileDD;
  float* mscr = reinterpret_cast<float*>(smem + Smem::kM);
  uint8_t* k_hi = smem + Smem::kK;
  uint8_t* k_lo = k_hi + Smem::kTileKD;
  uint8_t* v_hi = smem + Smem::kV;
  uint8_t* v_lo = v_hi + Smem::kTileKD;
  float* sc = reinterpret_cast<float*>(smem + Smem::kScal);
  float* F = sc;              // f cumsum (H)
  float* G = sc + 1 * C;      // g cumsum (S)
  float* nu_s = sc + 2 * C;
  float* u_s = sc + 3 * C;
  float* vv_s = sc + 4 * C;
  float* ginv = sc + 5 * C;

  // ---- gates; K, V, S-bar tiles --------------------------------------------------------------------
  if (warp < 2) {
    float* dst = warp == 0 ? F : G;
    const gating::Gate& gt = warp == 0 ? p.gate_h : p.gate_s;
    for (int t = lane; t < C; t += 32) dst[t] = t < len ? gt.at(b, t0 + t, h) : 0.f;
    __syncwarp();
    gating::warp_cumsum64(dst, len, lane);
  }
  if constexpr (kSplit) {
    tiling::stage_token_tile<C, D, kBwdSolveThreads, true>(p.k, b, t0, hk, len, nullptr, k_hi, k_lo, tid);
    tiling::stage_token_tile<C, D, kBwdSolveThreads, true>(p.v, b, t0, hk, len, nullptr, v_hi, v_lo, tid);
  } else {  // the single policy serves bf16 inputs only (forward.cuh: split_policy): raw copies
    // K, V and dO in one batch (one memory round trip); dO sits where S-bar lo goes until its A
    // fragments are in registers (8 ldmatrix instead of 32 scattered 4-byte loads).
    // dO may have any token dtype (validate.h): fp16 / fp32 dO is rounded to bf16 as it is staged
    // (the same values the fragments held before).
    if (p.d_o.dtype == DType::kBF16) {
      const TokenTensor* tts[3] = {&p.k, &p.v, &p.d_o};
      const int64_t heads[3] = {hk, hk, h};
      const float* scales[3] = {nullptr, nullptr, nullptr};
      uint8_t* const dsts[3] = {k_hi, v_hi, smem + Smem::kDo};
      tiling::stage_bf16_token_tiles<3, C, D, kBwdSolveThreads>(tts, heads, b, t0, len, scales, dsts, tid);
    } else {
      const TokenTensor* tts[2] = {&p.k, &p.v};
      const int64_t heads[2] = {hk, hk};
      const float* scales[2] = {nullptr, nullptr};
      uint8_t* const dsts[2] = {k_hi, v_hi};
      tiling::stage_bf16_token_tiles<2, C, D, kBwdSolveThreads>(tts, heads, b, t0, len, scales, dsts, tid);
      tiling::stage_token_tile<C, D, kBwdSolveThreads, false>(p.d_o, b, t0, h, len, nullptr, smem + Smem::kDo, nullptr, tid);
    }
  }
  if constexpr (kSplit) tiling::stage_state_tile<D, D, kBwdSolveThreads, kStateLo>(sbar, s_hi, s_lo, tid);

  const int row_a = 16 * warp + (lane >> 2), row_b = row_a + 8;
  const bool va = row_a < len, vb = row_b < len;
  uint32_t Ah[D / 16][4];
  [[maybe_unused]] uint32_t Al[D / 16][4];
  if constexpr (!kSplit) {  // dO A fragments from the staged tile (rows >= len are zero there)
    __syncthreads();
    const uint32_t sdo = smem_addr(smem + Smem::kDo);
#pragma unroll
    for (int kt = 0; kt < D / 16; ++kt) load_a<D, C>(sdo, 16 * warp, 16 * kt, lane, Ah[kt]);
    __syncthreads();  // the dO tile is dead: S-bar lo takes its place
    tiling::stage_state_tile<D, D, kBwdSolveThreads, kStateLo>(sbar, s_hi, s_lo, tid);
  } else {  // split policy: dO as hi + lo A fragments straight from global memory
    const int64_t oa = p.d_o.offset(b, t0 + row_a, h), ob = p.d_o.offset(b, t0 + row_b, h);
#pragma unroll
    for (int kt = 0; kt < D / 16; ++kt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {  // e: rows (a, b, a, b), columns 16 kt + 2c (+ 8 for e >= 2)
        const bool lo_row = (e & 1) == 0;
        const int col = 16 * kt + 2 * c + (e >= 2 ? 8 : 0);
        float2 d = make_float2(0.f, 0.f);
        if (lo_row ? va : vb) d = gating::load2_as_float(p.d_o.data, p.d_o.dtype, (lo_row ? oa : ob) + col);
        if constexpr (kSplit) split_bf16(d.x, d.y, Ah[kt][e], Al[kt][e]);
        else Ah[kt][e] = pack_bf16(d.x, d.y);
      }
  }
  __syncthreads();  // F, G and the tiles

  // per-row solve scalars from the saved nu (never recomputed)
  if (tid < C) {
    const int j = tid;
    const float nu = (solve && j < len) ? static_cast<const float*>(p.nu.data)[p.nu.offset(b, t0 + j, h)] : 0.f;
    const solver::RowCoefs rc = solver::chebyshev_row_coefs(p.ridge, F[j], nu);
    nu_s[j] = nu;
    u_s[j] = rc.u;
    vv_s[j] = rc.v;
    ginv[j] = rc.ginv;
  }

  // ---- dq~ = s [diag(e^G) (dO S-bar^T) + ((dO V^T) o L^g) K] ------------------------------------
  float Dq[D / 8][4];
  {
    const uint32_t ss_hi = smem_addr(s_hi), ss_lo = smem_addr(s_lo);
    const uint32_t sv_hi = smem_addr(v_hi), sv_lo = smem_addr(v_lo);
    const uint32_t sk_hi = smem_addr(k_hi), sk_lo = smem_addr(k_lo);
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) Dq[j][e] = 0.f;
    // inter: S-bar [key][value] is a [N][K] tile for dO S-bar^T
#pragma unroll
    for (int kt = 0; kt < D / 16; ++kt)
#pragma unroll
      for (int np = 0; np < D / 16; ++np) {
        uint32_t bq[4];
        load_b_nk<D, D>(ss_hi, 16 * np, 16 * kt, lane, bq);
        mma_bf16(Dq[2 * np], Ah[kt], bq[0], bq[1]);
        mma_bf16(Dq[2 * np + 1], Ah[kt], bq[2], bq[3]);
        if constexpr (kSplit) {
          mma_bf16(Dq[2 * np], Al[kt], bq[0], bq[1]);
          mma_bf16(Dq[2 * np + 1], Al[kt], bq[2], bq[3]);
        }
        if constexpr (kStateLo) {
          load_b_nk<D, D>(ss_lo, 16 * np, 16 * kt, lane, bq);
          mma_bf16(Dq[2 * np], Ah[kt], bq[0], bq[1]);
          mma_bf16(Dq[2 * np + 1], Ah[kt], bq[2], bq[3]);
        }
      }
    {
      const float g0 = __expf(G[row_a]), g1 = __expf(G[row_b]);
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        Dq[j][0] *= g0; Dq[j][1] *= g0; Dq[j][2] *= g1; Dq[j][3] *= g1;
      }
    }
    // intra: scores dO V^T (causal: token blocks 0 .. warp), masked by L^g, times K
    float S[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) S[j][e] = 0.f;
#pragma unroll
    for (int kt = 0; kt < D / 16; ++kt)
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        if (np > warp) continue;
        uint32_t bq[4];
        load_b_nk<D, C>(sv_hi, 16 * np, 16 * kt, lane, bq);
        mma_bf16(S[2 * np], Ah[kt], bq[0], bq[1]);
        mma_bf16(S[2 * np + 1], Ah[kt], bq[2], bq[3]);
        if constexpr (kSplit) {
          mma_bf16(S[2 * np], Al[kt], bq[0], bq[1]);
          mma_bf16(S[2 * np + 1], Al[kt], bq[2], bq[3]);
          load_b_nk<D, C>(sv_lo, 16 * np, 16 * kt, lane, bq);
          mma_bf16(S[2 * np], Ah[kt], bq[0], bq[1]);
          mma_bf16(S[2 * np + 1], Ah[kt], bq[2], bq[3]);
        }
      }
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) {
      if (kt > warp) continue;
      float s0[4], s1[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = e < 2 ? row_a : row_b;
        const int i0 = 16 * kt + 2 * c + (e & 1), i1 = i0 + 8;
        s0[e] = (i0 <= j && j < len) ? S[2 * kt][e] * gating::decay(G[j], G[i0]) : 0.f;
        s1[e] = (i1 <= j && j < len) ? S[2 * kt + 1][e] * gating::decay(G[j], G[i1]) : 0.f;
      }
      uint32_t ph[4], pl[4];
      acc_to_a_split(s0, s1, ph, pl);
#pragma unroll
      for (int np = 0; np < D / 16; ++np) {
        uint32_t bq[4];
        load_b_kn<D, C>(sk_hi, 16 * np, 16 * kt, lane, bq);
        mma_bf16(Dq[2 * np], ph, bq[0], bq[1]);
        mma_bf16(Dq[2 * np + 1], ph, bq[2], bq[3]);
        mma_bf16(Dq[2 * np], pl, bq[0], bq[1]);
        mma_bf16(Dq[2 * np + 1], pl, bq[2], bq[3]);
        if constexpr (kSplit) {
          load_b_kn<D, C>(sk_lo, 16 * np, 16 * kt, lane, bq);
          mma_bf16(Dq[2 * np], ph, bq[0], bq[1]);
          mma_bf16(Dq[2 * np + 1], ph, bq[2], bq[3]);
        }
      }
    }
    const float s = p.scale;
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) Dq[j][e] *= s;
  }

  // ---- alpha-mix adjoint (grad::mix_adjoint_row), q~, q~ . dq~ --------------------------------
  // Rows past len carry dq~ = 0 (dO rows are 0 and L^g is 0 there) and alpha = 1: X = 0 for them.
  // alpha of the thread's two rows (absent: 1); loaded again after the solve rather than kept live
  auto load_alpha = [&](bool valid, int row) {
    return (p.alpha.data != nullptr && valid) ? gating::load_as_float(p.alpha.data, p.alpha.dtype, p.alpha.offset(b, t0 + row, h)) : 1.f;
  };
  // The token dtypes are dispatched once (bwd_solve_detail::Fast / Any), and each group's loads are
  // issued before the first store that depends on them (the stores may alias the loads for all the
  // compiler knows: loads after a store would wait for the store's operands, one latency per element).
  const bool fast = !kSplit && p.x.dtype == DType::kFP32 && p.dq.dtype == DType::kBF16;  // q is bf16 here
  const float al0 = load_alpha(va, row_a), al1 = load_alpha(vb, row_b);
  float X[D / 8][4];  // the solve's right-hand side dX = alpha dq~, then z
  auto mix_phase = [&](auto tag) {
    // n8 tiles per load group (sm_80: fewer registers to spare), at most the D / 8 a row has
    constexpr int kG = (kSolveWgmma ? 8 : 4) < D / 8 ? (kSolveWgmma ? 8 : 4) : D / 8;
    static_assert((D / 8) % kG == 0, "whole load groups");
    float qdq0 = 0.f, qdq1 = 0.f, da0 = 0.f, da1 = 0.f;
    const int64_t qa = p.q.offset(b, t0 + row_a, h) + 2 * c, qb = p.q.offset(b, t0 + row_b, h) + 2 * c;
    const int64_t xa = p.x.offset(b, t0 + row_a, h) + 2 * c, xb = p.x.offset(b, t0 + row_b, h) + 2 * c;
    float* z_ws = static_cast<float*>(p.ws.z.data);
    float* qm_ws = static_cast<float*>(p.ws.qmix.data);
    const int64_t za = p.ws.z.offset(b, t0 + row_a, h) + 2 * c, zb = p.ws.z.offset(b, t0 + row_b, h) + 2 * c;
    const int64_t ma = p.ws.qmix.offset(b, t0 + row_a, h) + 2 * c, mb = p.ws.qmix.offset(b, t0 + row_b, h) + 2 * c;
    const int64_t da = p.dq.offset(b, t0 + row_a, h) + 2 * c, db = p.dq.offset(b, t0 + row_b, h) + 2 * c;
#pragma unroll
    for (int j0 = 0; j0 < D / 8; j0 += kG) {
      float2 q2[kG][2], x2[kG][2];
#pragma unroll
      for (int g = 0; g < kG; ++g)
#pragma unroll
        for (int pr = 0; pr < 2; ++pr) {
          const int col = 8 * (j0 + g);
          q2[g][pr] = make_float2(0.f, 0.f);
          if (pr ? vb : va) q2[g][pr] = bwd_solve_detail::load_q2(p.q, (pr ? qb : qa) + col, tag);
          x2[g][pr] = q2[g][pr];  // r = 0: x = q
          if (solve && (pr ? vb : va)) x2[g][pr] = bwd_solve_detail::load_x2(p.x, (pr ? xb : xa) + col, tag);
        }
#pragma unroll
      for (int g = 0; g < kG; ++g)
#pragma unroll
        for (int pr = 0; pr < 2; ++pr) {  // pr = 0: row a, 1: row b
          const int j = j0 + g, col = 8 * j;
          const bool v = pr ? vb : va;
          const float al = pr ? al1 : al0;
          const float2 qv = q2[g][pr], xv = x2[g][pr];
          const float dq0 = Dq[j][2 * pr], dq1 = Dq[j][2 * pr + 1];
          const float m0 = solve ? grad::mix_query(al, qv.x, xv.x) : qv.x;
          const float m1 = solve ? grad::mix_query(al, qv.y, xv.y) : qv.y;
          (pr ? qdq1 : qdq0) += m0 * dq0 + m1 * dq1;
          (pr ? da1 : da0) += dq0 * (xv.x - qv.x) + dq1 * (xv.y - qv.y);
          X[j][2 * pr] = al * dq0;
          X[j][2 * pr + 1] = al * dq1;
          if (v) {
            *reinterpret_cast<float2*>(qm_ws + (pr ? mb : ma) + col) = make_float2(m0, m1);
            // r > 0: dq~ is parked in shared memory until z replaces it. r = 0: dq = dq~, z = 0.
            if (!solve) {
              *reinterpret_cast<float2*>(z_ws + (pr ? zb : za) + col) = make_float2(0.f, 0.f);
              bwd_solve_detail::store_dq2(p.dq, (pr ? db : da) + col, dq0, dq1, tag);
            }
          }
        }
    }
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
      qdq0 += __shfl_xor_sync(0xffffffffu, qdq0, o);
      qdq1 += __shfl_xor_sync(0xffffffffu, qdq1, o);
      da0 += __shfl_xor_sync(0xffffffffu, da0, o);
      da1 += __shfl_xor_sync(0xffffffffu, da1, o);
    }
    if (c == 0) {
      float* qdq_ws = static_cast<float*>(p.ws.qdq.data);
      const bool has_da = p.dalpha.data != nullptr;
      if (va) {
        qdq_ws[p.ws.qdq.offset(b, t0 + row_a, h)] = qdq0;
        if (has_da) bwd_solve_detail::store_as(p.dalpha.data, p.dalpha.dtype, p.dalpha.offset(b, t0 + row_a, h), solve ? da0 : 0.f);
      }
      if (vb) {
        qdq_ws[p.ws.qdq.offset(b, t0 + row_b, h)] = qdq1;
        if (has_da) bwd_solve_detail::store_as(p.dalpha.data, p.dalpha.dtype, p.dalpha.offset(b, t0 + row_b, h), solve ? da1 : 0.f);
      }
    }
  };
  if (!kSplit && fast) mix_phase(bwd_solve_detail::Fast{});
  else mix_phase(bwd_solve_detail::Any{});
  if (!solve) {
    float* w_ws = static_cast<float*>(p.ws.w.data);
    float* unu_ws = static_cast<float*>(p.ws.unu.data);
    if (c == 0) {
      if (va) { w_ws[p.ws.w.offset(b, t0 + row_a, h)] = 0.f; unu_ws[p.ws.unu.offset(b, t0 + row_a, h)] = 0.f; }
      if (vb) { w_ws[p.ws.w.offset(b, t0 + row_b, h)] = 0.f; unu_ws[p.ws.unu.offset(b, t0 + row_b, h)] = 0.f; }
    }
    return;
  }

  // ---- z = CH(A, dX): the forward's program on dX -----------------------------------------------
  __syncthreads();  // S-bar and V are dead: H-bar and M take the big region, dq~ is parked
  // dq~ parked in fragment order (each thread reads back only what it wrote: no barrier needed)
  // (the address is formed again after the solve: nothing extra stays live across the rounds)
  auto park_at = [&]() {
    return reinterpret_cast<float4*>(smem + (warp < 2 ? Smem::kPark0 + warp * Smem::kParkWarp
                                                      : Smem::kPark1 + (warp - 2) * Smem::kParkWarp)) + lane;
  };
#pragma unroll
  for (int j = 0; j < D / 8; ++j) park_at()[32 * j] = make_float4(Dq[j][0], Dq[j][1], Dq[j][2], Dq[j][3]);
  tiling::stage_state_tile<D, D, kBwdSolveThreads, kSplit>(hbar, hb_hi, hb_lo, tid);
  if constexpr (kWgmma) tiling::wg::fence_proxy_async();  // H-bar, K: thread stores -> wgmma reads
  const float4* mask = solver::build_chebyshev_mask(F, len, mscr, warp, lane);
  __syncthreads();
  {
    float E[D / 8][4];
    uint32_t Dh[D / 16][4];
    const solver::ChunkOperands op{smem_addr(hb_hi), smem_addr(hb_lo), smem_addr(k_hi), smem_addr(k_lo), mask};
    solver::chebyshev_solve_rows<D, kSplit, kWgmma>(X, E, Dh, op, u_s, vv_s, ginv, p.ridge, r_iter, warp, lane);
  }

  // ---- epilogue: dq = (1 - alpha) dq~ + z; z; u = a z . x -> w, u nu --------------------------------
  auto epilogue = [&](auto tag) {
    constexpr int kG = (kSolveWgmma ? 16 : 4) < D / 8 ? (kSolveWgmma ? 16 : 4) : D / 8;  // n8 tiles per load group, <= D / 8
    static_assert((D / 8) % kG == 0, "whole load groups");
    const float nu0 = nu_s[row_a], nu1 = nu_s[row_b];
    const float al0 = load_alpha(va, row_a), al1 = load_alpha(vb, row_b);
    const bool live0 = grad::has_solve_adjoint(r_iter, nu0), live1 = grad::has_solve_adjoint(r_iter, nu1);
    float zx0 = 0.f, zx1 = 0.f;
    const float4* park = park_at();
    float* z_ws = static_cast<float*>(p.ws.z.data);
    const int64_t za = p.ws.z.offset(b, t0 + row_a, h) + 2 * c, zb = p.ws.z.offset(b, t0 + row_b, h) + 2 * c;
    const int64_t xa = p.x.offset(b, t0 + row_a, h) + 2 * c, xb = p.x.offset(b, t0 + row_b, h) + 2 * c;
    const int64_t da = p.dq.offset(b, t0 + row_a, h) + 2 * c, db = p.dq.offset(b, t0 + row_b, h) + 2 * c;
#pragma unroll
    for (int j0 = 0; j0 < D / 8; j0 += kG) {
      float2 x2[kG][2];
#pragma unroll
      for (int g = 0; g < kG; ++g)
#pragma unroll
        for (int pr = 0; pr < 2; ++pr) {
          x2[g][pr] = make_float2(0.f, 0.f);
          if (pr ? vb : va) x2[g][pr] = bwd_solve_detail::load_x2(p.x, (pr ? xb : xa) + 8 * (j0 + g), tag);
        }
#pragma unroll
      for (int g = 0; g < kG; ++g) {
        const int j = j0 + g, col = 8 * j;
        const float4 dqt = park[32 * j];  // dq~ of rows a (x, y) and b (z, w)
#pragma unroll
        for (int pr = 0; pr < 2; ++pr) {
          if (!(pr ? vb : va)) continue;
          const bool live = pr ? live1 : live0;
          const float al = pr ? al1 : al0;
          const float z0 = live ? X[j][2 * pr] : 0.f, z1 = live ? X[j][2 * pr + 1] : 0.f;
          const float t0v = pr ? dqt.z : dqt.x, t1v = pr ? dqt.w : dqt.y;
          (pr ? zx1 : zx0) += z0 * x2[g][pr].x + z1 * x2[g][pr].y;
          *reinterpret_cast<float2*>(z_ws + (pr ? zb : za) + col) = make_float2(z0, z1);
          bwd_solve_detail::store_dq2(p.dq, (pr ? db : da) + col, (1.f - al) * t0v + z0, (1.f - al) * t1v + z1, tag);
        }
      }
    }
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
      zx0 += __shfl_xor_sync(0xffffffffu, zx0, o);
      zx1 += __shfl_xor_sync(0xffffffffu, zx1, o);
    }
    if (c == 0) {
      float* w_ws = static_cast<float*>(p.ws.w.data);
      float* unu_ws = static_cast<float*>(p.ws.unu.data);
      grad::RidgeAdjoint<float> r0, r1;  // zeros without bp_lambda
      if (p.bp_lambda) {
        r0 = grad::ridge_adjoint(p.ridge, zx0, nu0);
        r1 = grad::ridge_adjoint(p.ridge, zx1, nu1);
      }
      if (va) { w_ws[p.ws.w.offset(b, t0 + row_a, h)] = r0.w; unu_ws[p.ws.unu.offset(b, t0 + row_a, h)] = r0.u_nu; }
      if (vb) { w_ws[p.ws.w.offset(b, t0 + row_b, h)] = r1.w; unu_ws[p.ws.unu.offset(b, t0 + row_b, h)] = r1.u_nu; }
    }
  };
  if (!kSplit && p.x.dtype == DType::kFP32 && p.dq.dtype == DType::kBF16) epilogue(bwd_solve_detail::Fast{});
  else epilogue(bwd_solve_detail::Any{});
}

}  // namespace kernels
GKA_NAMESPACE_END
