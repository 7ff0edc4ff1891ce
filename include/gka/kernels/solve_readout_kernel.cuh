// gka/kernels/solve_readout_kernel.cuh: the fused per-chunk kernel of the forward: per-token nu
// (spec 3.3), the r-step Chebyshev solve on tensor cores (solver/chebyshev_tc.cuh), the alpha-mix
// and the GLA read-out (spec 3.5). x and nu reach HBM only when the caller asks for them.
//
// Grid: (chunk_bound, H_q). Block: 128 threads = 4 warps = one warpgroup, warp w owns tokens
// 16w..16w+15. Backends (compile time, per arch): in sm_90a device code the bf16 policy runs the hot
// loop and the read-out products as warpgroup wgmma (tiling/wgmma.cuh); everything else (sm_80, the
// split policy, nu) uses mma.sync. Both read the same SW128 smem tiles.
// Policies: kSplit = false (bf16 inputs): bf16 operands, exact for the keys; kSplit = true (fp16 and
// fp32 inputs, the accuracy path): every B operand and P carried as bf16 hi + lo.
// The read-out always uses hi/lo splits of q~ and S-bar (q~ is where the read-out cancels).
// TState: element type of the chunk states in the workspace (float, or __nv_bfloat16 when
// ForwardArgs::chunk_state_dtype = bf16). bf16 states are exactly their hi part: H-bar's lo tile is
// zero (the split policy still reads it) and the S-bar lo products are skipped.
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/solver/chebyshev_rows.cuh"
#include "gka/solver/chebyshev_schedule.h"
#include "gka/solver/chebyshev_tc.cuh"
#include "gka/solver/nu.cuh"
#include "gka/solver/readout_wgmma.cuh"
#include "gka/tiling/chunks.cuh"
#include "gka/tiling/copy.cuh"
#include "gka/tiling/mma.cuh"
#include "gka/tiling/stage.cuh"
#include "gka/tiling/wgmma.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

struct SolveReadoutParams {
  tiling::ChunkGeometry geo;
  int64_t heads_q = 0, group = 1;
  TokenTensor q, k, v, alpha, beta;
  gating::Gate gate_h, gate_s;
  bool l2norm_qk = false, use_beta = false;
  int num_iter = 30;
  float ridge = 0.02f;
  float scale = 1.f;
  const void* states_h = nullptr;  // [chunk_bound][H_q][D][D] of TState
  const void* states_s = nullptr;
  TokenTensor o, x, nu;
};

constexpr int kSolveThreads = 128;  // one warpgroup

// The hot loop runs on wgmma in sm_90a device code for the bf16 policy (GKA_SOLVE_WGMMA=0 forces
// mma.sync everywhere); the split policy keeps mma.sync (its hi/lo B operands would need 3 wgmma
// products per round and more smem than 2 CTAs/SM allow).
#ifndef GKA_SOLVE_WGMMA
#define GKA_SOLVE_WGMMA 1
#endif
#ifndef GKA_READOUT_WGMMA
#define GKA_READOUT_WGMMA 1  // the read-out products on wgmma too (with GKA_SOLVE_WGMMA)
#endif
#if GKA_ARCH_SM90A && GKA_SOLVE_WGMMA
constexpr bool kSolveWgmma = true;
#else
constexpr bool kSolveWgmma = false;
#endif
constexpr int kSolveChunk = 64;

template <int D, bool kSplit>
struct SolveSmem {
  static constexpr int kTileKD = kSolveChunk * D * 2;  // one bf16 [C][D] tile
  static constexpr int kTileDD = D * D * 2;            // one bf16 [D][D] tile
  static constexpr int kScratch = kSolveChunk * solver::kPadC * 4;
  // region "big": Hbar hi [lo], then the raw q tile (X, bf16 policy) and W2 / M (Y); after the
  // solve S-bar hi + lo.
  static constexpr int kHbar = 0;
  static constexpr int kX = kHbar + (kSplit ? 2 : 1) * kTileDD;
  static constexpr int kY = kX + kScratch;
  static constexpr int kBigEnd = (kY + kScratch > 2 * kTileDD) ? kY + kScratch : 2 * kTileDD;
  static constexpr int kK = kBigEnd;
  static constexpr int kV = kK + (kSplit ? 2 : 1) * kTileKD;
  static constexpr int kScal = kV + (kSplit ? 2 : 1) * kTileKD;
  static constexpr int kNumScal = 12;
  // + 1024: the kernel aligns its base to 1024 B (SW128 tiles for wgmma descriptors).
  static constexpr int kBytes = kScal + kNumScal * kSolveChunk * 4 + 64 + 1024;
  static_assert(kK % 1024 == 0 && kV % 1024 == 0, "SW128 tiles must stay 1024-byte aligned");
  static_assert(kTileKD <= kScratch && kX % 128 == 0, "the q tile lives in the X scratch");
};

template <int D, bool kSplit, class TState = float>
__global__ void __launch_bounds__(kSolveThreads, kSplit ? 1 : 2) solve_readout_kernel(SolveReadoutParams p) {
  using Smem = SolveSmem<D, kSplit>;
  using namespace tiling;
  constexpr bool kStateLo = sizeof(TState) == 4;  // S-bar has a nonzero lo part only for fp32 states
  constexpr bool kWgmma = kSolveWgmma && !kSplit;
  constexpr bool kWgmmaReadout = kWgmma && (GKA_READOUT_WGMMA != 0);
  extern __shared__ __align__(128) uint8_t smem_raw[];
  // offset the array itself (not an integer round trip) so the compiler still sees shared memory
  uint8_t* smem = smem_raw + ((1024u - (tiling::smem_addr(smem_raw) & 1023u)) & 1023u);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, r = lane >> 2, c = lane & 3;
  const int64_t cidx = blockIdx.x, h = blockIdx.y, hk = h / p.group;
  const ChunkEntry ce = p.geo.chunk_entry(cidx);
  if (ce.seq < 0) return;
  const TState* hbar = static_cast<const TState*>(p.states_h) + (cidx * p.heads_q + h) * D * D;
  const TState* sbar = static_cast<const TState*>(p.states_s) + (cidx * p.heads_q + h) * D * D;
  const int64_t b = p.geo.varlen ? 0 : ce.seq;
  const int len = ce.len;
  const int64_t t0 = ce.t0;
  // Ask L2 for this chunk's operands now: the staging loads below then wait on L2, not HBM.
  {
    tiling::prefetch_l2_range(hbar, D * D * static_cast<int>(sizeof(TState)), tid, kSolveThreads);
    // one token row per thread (q and v rows: threads 0..63, k rows: 64..127), rolled: short code
    const int t = tid & (kSolveChunk - 1);
    auto prefetch_row = [&](const TokenTensor& tt, int64_t head) {
      const int es = dtype_size(tt.dtype);
      const uint8_t* row = static_cast<const uint8_t*>(tt.data) + tt.offset(b, t0 + t, head) * es;
#pragma unroll 1
      for (int l = 0; l < D * es; l += 128) tiling::prefetch_l2(row + l);
    };
    if (t < len) {
      if (tid < kSolveChunk) {
        prefetch_row(p.q, h);
        prefetch_row(p.v, hk);
      } else {
        prefetch_row(p.k, hk);
      }
    }
  }

  uint8_t* hb_hi = smem + Smem::kHbar;
  uint8_t* hb_lo = hb_hi + Smem::kTileDD;
  uint8_t* q_tile = smem + Smem::kX;  // bf16 policy: raw q (unscaled), staged with K and V
  float* Ym = reinterpret_cast<float*>(smem + Smem::kY);
  uint8_t* k_hi = smem + Smem::kK;
  uint8_t* k_lo = k_hi + Smem::kTileKD;
  uint8_t* v_hi = smem + Smem::kV;
  uint8_t* v_lo = v_hi + Smem::kTileKD;
  float* sc = reinterpret_cast<float*>(smem + Smem::kScal);
  float* F = sc;                      // f cumsum
  float* G = sc + 1 * kSolveChunk;    // g cumsum
  float* q_scale = sc + 2 * kSolveChunk;
  float* k_scale = sc + 3 * kSolveChunk;
  float* v_scale = sc + 4 * kSolveChunk;
  float* pq = sc + 5 * kSolveChunk;   // k_i^T Hbar k_i
  float* t3 = sc + 6 * kSolveChunk;
  float* nu_s = sc + 7 * kSolveChunk;
  float* u_s = sc + 8 * kSolveChunk;
  float* vv_s = sc + 9 * kSolveChunk;
  float* ginv = sc + 10 * kSolveChunk;  // 1 / Gamma'
  float* red = sc + 12 * kSolveChunk;   // block reduction slots

  // ---- gates, fused-transform scales ----------------------------------------------------------
  if (warp < 2) {
    float* dst = warp == 0 ? F : G;
    const gating::Gate& gt = warp == 0 ? p.gate_h : p.gate_s;
    for (int t = lane; t < kSolveChunk; t += 32) dst[t] = t < len ? gt.at(b, t0 + t, h) : 0.f;
    __syncwarp();
    gating::warp_cumsum64(dst, len, lane);
  }
  for (int t = warp; t < kSolveChunk; t += kSolveThreads / 32) {
    float sq = 0.f, sk = 0.f;
    if (p.l2norm_qk && t < len) {
      for (int i = 2 * lane; i < D; i += 64) {
        const float2 a = gating::load2_as_float(p.q.data, p.q.dtype, p.q.offset(b, t0 + t, h) + i);
        const float2 e = gating::load2_as_float(p.k.data, p.k.dtype, p.k.offset(b, t0 + t, hk) + i);
        sq += a.x * a.x + a.y * a.y;
        sk += e.x * e.x + e.y * e.y;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        sq += __shfl_xor_sync(0xffffffffu, sq, o);
        sk += __shfl_xor_sync(0xffffffffu, sk, o);
      }
    }
    const float be = (p.use_beta && t < len) ? gating::load_as_float(p.beta.data, p.beta.dtype, p.beta.offset(b, t0 + t, h)) : 0.f;
    if (lane == 0) {
      q_scale[t] = gating::fused_scale(p.l2norm_qk, sq, false, 0.f);
      k_scale[t] = gating::fused_scale(p.l2norm_qk, sk, p.use_beta, be);
      v_scale[t] = gating::fused_scale(false, 0.f, p.use_beta, be);
    }
  }
  __syncthreads();

  // ---- operand tiles: Hbar (fp32 workspace -> bf16 hi [lo]), K, V ------------------------------
  float t1 = tiling::stage_state_tile<D, D, kSolveThreads, kSplit>(hbar, hb_hi, hb_lo, tid);
  if constexpr (kSplit) {
    tiling::stage_token_tile<kSolveChunk, D, kSolveThreads, true>(p.k, b, t0, hk, len, k_scale, k_hi, k_lo, tid);
    tiling::stage_token_tile<kSolveChunk, D, kSolveThreads, true>(p.v, b, t0, hk, len, v_scale, v_hi, v_lo, tid);
  } else {  // the single policy serves bf16 inputs only (forward.cuh: split_policy)
    // K, V and the raw q in one batch (one memory round trip); q's scale is applied in fp32 when
    // its fragments are read, as before.
    const TokenTensor* tts[3] = {&p.k, &p.v, &p.q};
    const int64_t heads[3] = {hk, hk, h};
    const float* scales[3] = {k_scale, v_scale, nullptr};
    uint8_t* const dsts[3] = {k_hi, v_hi, q_tile};
    tiling::stage_bf16_token_tiles<3, kSolveChunk, D, kSolveThreads>(tts, heads, b, t0, len, scales, dsts, tid);
  }
  if constexpr (kWgmma) tiling::wg::fence_proxy_async();  // Hbar, K: thread stores -> wgmma reads
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) t1 += __shfl_xor_sync(0xffffffffu, t1, o);
  if (lane == 0) red[warp] = t1;
  __syncthreads();
  t1 = red[0] + red[1] + red[2] + red[3];

  // ---- nu ----------------------------------------------------------------------------------------
  const uint32_t sk_hi = smem_addr(k_hi), sk_lo = smem_addr(k_lo);
  const uint32_t sh_hi = smem_addr(hb_hi), sh_lo = smem_addr(hb_lo);
  if constexpr (kWgmma) solver::gram_and_quadratic_wg<D>(sk_hi, sh_hi, Ym, pq, warp, lane);
  else solver::gram_and_quadratic<D, kSplit>(k_hi, k_lo, sk_hi, sk_lo, sh_hi, sh_lo, Ym, pq, warp, lane);
  __syncthreads();
  solver::intra_norm_sq(F, len, Ym, t3, warp, lane);
  __syncthreads();
  const float ridge = p.ridge;
  if (tid < kSolveChunk) {
    const int j = tid;
    float nu = 0.f;
    if (j < len) {
      float t2 = 0.f;
      for (int i = 0; i <= j; ++i) t2 += gating::decay(F[j], F[i]) * pq[i];
      const float gam = __expf(F[j]);
      nu = sqrtf(fmaxf(gam * gam * t1 + 2.f * gam * t2 + t3[j], 0.f));
    }
    const solver::RowCoefs rc = solver::chebyshev_row_coefs(ridge, F[j], nu);
    nu_s[j] = nu;
    u_s[j] = rc.u;
    vv_s[j] = rc.v;
    ginv[j] = rc.ginv;
    if ((p.nu.data != nullptr) && j < len) static_cast<float*>(p.nu.data)[p.nu.offset(b, t0 + j, h)] = nu;
  }
  __syncthreads();  // W2 in Y is dead from here; M takes its place
  const float4* mask = solver::build_chebyshev_mask(F, len, Ym, warp, lane);

  // ---- the solve ---------------------------------------------------------------------------------
  const int row_a = 16 * warp + r, row_b = row_a + 8;
  float E[D / 8][4], X[D / 8][4];
  uint32_t Dh[D / 16][4];
  // two q elements; the single policy serves bf16 inputs only, so it needs no dtype dispatch
  auto load_q2 = [&](int64_t off) -> float2 {
    if constexpr (kSplit) return gating::load2_as_float(p.q.data, p.q.dtype, off);
    else return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(static_cast<const __nv_bfloat16*>(p.q.data) + off));
  };
  const uint32_t sq_tile = smem_addr(q_tile);
  auto load_q = [&](float (&dst)[D / 8][4]) {
    if constexpr (!kSplit) {  // from the staged tile: 8 ldmatrix instead of 32 global loads
      const float qa = q_scale[row_a], qb = q_scale[row_b];
#pragma unroll
      for (int kt = 0; kt < D / 16; ++kt) {
        uint32_t a[4];
        load_a<D, kSolveChunk>(sq_tile, 16 * warp, 16 * kt, lane, a);
        dst[2 * kt][0] = bf16_lo(a[0]) * qa;
        dst[2 * kt][1] = bf16_hi(a[0]) * qa;
        dst[2 * kt][2] = bf16_lo(a[1]) * qb;
        dst[2 * kt][3] = bf16_hi(a[1]) * qb;
        dst[2 * kt + 1][0] = bf16_lo(a[2]) * qa;
        dst[2 * kt + 1][1] = bf16_hi(a[2]) * qa;
        dst[2 * kt + 1][2] = bf16_lo(a[3]) * qb;
        dst[2 * kt + 1][3] = bf16_hi(a[3]) * qb;
      }
    } else {
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const int col = 8 * j + 2 * c;
        float2 a = make_float2(0.f, 0.f), bb = make_float2(0.f, 0.f);
        if (row_a < len) a = load_q2(p.q.offset(b, t0 + row_a, h) + col);
        if (row_b < len) bb = load_q2(p.q.offset(b, t0 + row_b, h) + col);
        dst[j][0] = a.x * q_scale[row_a];
        dst[j][1] = a.y * q_scale[row_a];
        dst[j][2] = bb.x * q_scale[row_b];
        dst[j][3] = bb.y * q_scale[row_b];
      }
    }
  };
  load_q(X);
  // S-bar is read only after the solve: have it in L2 by then.
  tiling::prefetch_l2_range(sbar, D * D * static_cast<int>(sizeof(TState)), tid, kSolveThreads);
  const int r_iter = p.num_iter;
  if (r_iter > 0) {
    const solver::ChunkOperands op{sh_hi, sh_lo, sk_hi, sk_lo, mask};
    solver::chebyshev_solve_rows<D, kSplit, kWgmma>(X, E, Dh, op, u_s, vv_s, ginv, ridge, r_iter, warp, lane);
  }
  // X holds x (r > 0) or q (r = 0). One dtype dispatch and one row address per row (as store_o).
  if ((p.x.data != nullptr)) {
    auto store_x = [&](auto tag) {
      using T = decltype(tag);
      T* xa = static_cast<T*>(p.x.data) + p.x.offset(b, t0 + row_a, h) + 2 * c;
      T* xb = static_cast<T*>(p.x.data) + p.x.offset(b, t0 + row_b, h) + 2 * c;
      const bool va = row_a < len, vb = row_b < len;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        if (va) gating::store2<T>(xa + 8 * j, X[j][0], X[j][1]);
        if (vb) gating::store2<T>(xb + 8 * j, X[j][2], X[j][3]);
      }
    };
    switch (p.x.dtype) {
      case DType::kBF16: store_x(__nv_bfloat16{}); break;
      case DType::kFP16: store_x(__half{}); break;
      default: store_x(float{}); break;
    }
  }
  // alpha-mix in fp32: q~ = q + alpha (x - q)
  if (r_iter > 0) {
    load_q(E);
    const float al0 = ((p.alpha.data != nullptr) && row_a < len) ? gating::load_as_float(p.alpha.data, p.alpha.dtype, p.alpha.offset(b, t0 + row_a, h)) : 1.f;
    const float al1 = ((p.alpha.data != nullptr) && row_b < len) ? gating::load_as_float(p.alpha.data, p.alpha.dtype, p.alpha.offset(b, t0 + row_b, h)) : 1.f;
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) X[j][e] = E[j][e] + (e < 2 ? al0 : al1) * (X[j][e] - E[j][e]);
  }
  __syncthreads();  // Hbar, L, M dead: S-bar (hi + lo) goes into the big region

  // ---- read-out: o = s [Gamma_g o (q~ S-bar) + ((q~ K^T) o L_g) V] --------------------------------
  uint8_t* s_hi = smem + Smem::kHbar;
  uint8_t* s_lo = s_hi + Smem::kTileDD;
  tiling::stage_state_tile<D, D, kSolveThreads, kStateLo>(sbar, s_hi, s_lo, tid);
  if constexpr (kWgmmaReadout) tiling::wg::fence_proxy_async();  // S-bar: thread stores -> wgmma reads
  __syncthreads();
  const uint32_t ss_hi = smem_addr(s_hi), ss_lo = smem_addr(s_lo);
  const uint32_t sv_hi = smem_addr(v_hi), sv_lo = smem_addr(v_lo);
  float (&O)[D / 8][4] = E;
  uint32_t Qh[D / 16][4], Ql[D / 16][4];
#pragma unroll
  for (int kt = 0; kt < D / 16; ++kt) acc_to_a_split(X[2 * kt], X[2 * kt + 1], Qh[kt], Ql[kt]);
  if constexpr (kWgmmaReadout) {
    solver::readout_wg<D, kStateLo>(O, Qh, Ql, ss_hi, ss_lo, sk_hi, sv_hi, G, len, warp, lane);
  } else {
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) O[j][e] = 0.f;
#pragma unroll
    for (int kt = 0; kt < D / 16; ++kt)
#pragma unroll
      for (int np = 0; np < D / 16; ++np) {
        uint32_t bq[4];
        load_b_kn<D, D>(ss_hi, 16 * np, 16 * kt, lane, bq);
        mma_bf16(O[2 * np], Qh[kt], bq[0], bq[1]);
        mma_bf16(O[2 * np + 1], Qh[kt], bq[2], bq[3]);
        mma_bf16(O[2 * np], Ql[kt], bq[0], bq[1]);
        mma_bf16(O[2 * np + 1], Ql[kt], bq[2], bq[3]);
        if constexpr (kStateLo) {
          load_b_kn<D, D>(ss_lo, 16 * np, 16 * kt, lane, bq);
          mma_bf16(O[2 * np], Qh[kt], bq[0], bq[1]);
          mma_bf16(O[2 * np + 1], Qh[kt], bq[2], bq[3]);
        }
      }
    {
      const float g0 = __expf(G[row_a]), g1 = __expf(G[row_b]);
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        O[j][0] *= g0; O[j][1] *= g0; O[j][2] *= g1; O[j][3] *= g1;
      }
    }
    {
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
          load_b_nk<D, kSolveChunk>(sk_hi, 16 * np, 16 * kt, lane, bq);
          mma_bf16(S[2 * np], Qh[kt], bq[0], bq[1]);
          mma_bf16(S[2 * np + 1], Qh[kt], bq[2], bq[3]);
          mma_bf16(S[2 * np], Ql[kt], bq[0], bq[1]);
          mma_bf16(S[2 * np + 1], Ql[kt], bq[2], bq[3]);
          if constexpr (kSplit) {
            load_b_nk<D, kSolveChunk>(sk_lo, 16 * np, 16 * kt, lane, bq);
            mma_bf16(S[2 * np], Qh[kt], bq[0], bq[1]);
            mma_bf16(S[2 * np + 1], Qh[kt], bq[2], bq[3]);
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
          load_b_kn<D, kSolveChunk>(sv_hi, 16 * np, 16 * kt, lane, bq);
          mma_bf16(O[2 * np], ph, bq[0], bq[1]);
          mma_bf16(O[2 * np + 1], ph, bq[2], bq[3]);
          mma_bf16(O[2 * np], pl, bq[0], bq[1]);
          mma_bf16(O[2 * np + 1], pl, bq[2], bq[3]);
          if constexpr (kSplit) {
            load_b_kn<D, kSolveChunk>(sv_lo, 16 * np, 16 * kt, lane, bq);
            mma_bf16(O[2 * np], ph, bq[0], bq[1]);
            mma_bf16(O[2 * np + 1], ph, bq[2], bq[3]);
          }
        }
      }
    }
  }
  // One dtype dispatch and one row address per row, not per element: the epilogue is straight-line
  // code and the kernel is instruction-fetch bound outside the loop.
  const float s = p.scale;
  auto store_o = [&](auto tag) {
    using T = decltype(tag);
    T* oa = static_cast<T*>(p.o.data) + p.o.offset(b, t0 + row_a, h) + 2 * c;
    T* ob = static_cast<T*>(p.o.data) + p.o.offset(b, t0 + row_b, h) + 2 * c;
    const bool va = row_a < len, vb = row_b < len;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      if (va) gating::store2<T>(oa + 8 * j, s * O[j][0], s * O[j][1]);
      if (vb) gating::store2<T>(ob + 8 * j, s * O[j][2], s * O[j][3]);
    }
  };
  switch (p.o.dtype) {
    case DType::kBF16: store_o(__nv_bfloat16{}); break;
    case DType::kFP16: store_o(__half{}); break;
    default: store_o(float{}); break;
  }
}

}  // namespace kernels
GKA_NAMESPACE_END
