// gka/kernels/bwd_cov_kernel.cuh: the covariance adjoint's intra-chunk pass of the GPU backward
// (spec 4.6 Pass D, the Pass-E consumption of B~, Pass F), mirroring covariance_adjoint_chunked in
// include/gka/reference/head_backward_chunked.h for one chunk of one query head.
//
// Grid: (chunk_bound, H_q). Block: 128 threads = 4 warps, two CTAs per SM: warp w owns chunk rows
// 16 w .. +15 and all D output columns of every D-wide product (dk, Hbar x, Hbar k, G k) and forms
// its own 16 x C score tiles (K K^T, K X^T, K Z^T). Products are split-bf16 mma.sync (tiling/warp_gemm.cuh) with the
// hi/lo choice per operand at compile time: x, z and the fp32 states (and G) are hi + lo (they meet
// the keys in terms that cancel); a bf16 K and a bf16 Hbar are exact, so their lo tiles are neither
// staged nor multiplied (bitwise the same results as multiplying the zero lo parts). Pre-negated as
// the reference; the sign flips on store.
// Performance (H200, B = 8, T = 8192, H = 16, D = 128, bf16 K, fp32 states, bp_lambda: 16,384
// programs; "[perf]" in tests/gpu/test_bwd_perf_intra.cu): the 4-warp version ran ~10 ms, latency
// bound (one CTA per SM, 162.5 KiB smem, 249 registers; one warp per m16 slab cannot hide
// mma.sync + ldmatrix latency and the staging loops left one L2 round trip per few loads). Levers
// taken: (1) 8 warps with half-width accumulators (2x the warps, 2x the loads in flight while
// staging, same smem, so still one CTA per SM: 2 per SM would need <= 113 KiB, i.e. giving up the
// hi + lo x / z / state tiles); (2) no lo products for bf16 K / Hbar (-1/3 of the K products);
// (3) U is upper triangular: slab w skips score column pairs / k-steps < w in K X^T, K Z^T, P Z,
// Q' X (-37.5% of those); (4) <R, Hbar>, <B, Hbar> come from the loads that stage G (R, B are
// read once, Hbar again from L2), two 4 x 4 blocks per thread in flight together.
// Measured (H200, a82d4bb, 8 warps, one CTA per SM): 7.98 ms at the benchmark shape (B = 2, T =
// 4096: 0.99 ms); 198 registers, 162.75 KiB smem.
// Now (perf-intra3, 598cc54): 4 warps x 2 CTAs per SM (113 KiB smem: the D x D states go through a
// 64 x 64 piece slot, (D/64)^2 pieces, so one CTA's staging round trips overlap the other's
// products); 245-247 registers, no spills: 5.79 ms at the benchmark shape (B = 2, T = 4096: 0.73 ms).
// What is left (target <= 4 ms): the piece loop is stage -> sync -> product -> sync (8 round trips
// per chunk in each CTA): prefetching the next piece into registers while the current one
// multiplies, or cp.async into a second 16 KiB piece slot (needs 16 KiB: e.g. K's unused lo tile
// for a bf16 K), and G's staging reads R twice (R, R^T) and Hbar again.
// Per row i (tau_i = e^{F_C' - F_i}, so kappa_i = tau_i k_i; G = R + R^T + B, B only with bp_lambda):
//   dk_pre_i = b_i Hbar k_i + sum_l ((K K^T) o W)_il k_l          [lambda part: bp_lambda only]
//            + tau_i G k_i                                       [(R + R^T) kappa_i + B kappa_i]
//            + sum_j P_ij z_j + sum_j (Q' o U)_ij x_j
// The dF terms -kappa^T R k, -1/2 kappa^T B k and -1/2 k^T (lambda part) all equal -1/2 k_i . (the
// first two lines), so one dot d_i of k_i with the accumulator after those lines serves them all;
// e_i = 1/2 tau_i k_i . (G k_i) = kappa^T R k + 1/2 kappa^T B k is also what the chunk end collects.
//   dF_pre_i = sum_l Y_li - sum_l Y_il + Gamma_i z_i . (Hbar x_i) - d_i + u_i nu_i
//            + [i = len-1] (sum_l e_l + e^{F_C'} (<R, Hbar> + 1/2 <B, Hbar>))
// W = U diag(w) U^T in closed form: W_il = e^{F_m - F_n} s_m with m = max(i, l), n = min(i, l) and
// s_m = sum_{j>=m} e^{2 (F_j - F_m)} w_j (a stable reverse recurrence); b_i = Gamma_i s_i.
// Shared memory phases: K, X, Z tiles for the whole kernel; one 64 x 64 piece slot (hi + lo) holds
// Hbar's pieces, then G's, then the late per-row scalars: 113 KiB at D = 128, 65 KiB at D = 64.
// Every output element is read and written by one thread: deterministic, no atomics.
#pragma once

#include <cstdint>
#include <type_traits>
#include <cuda_bf16.h>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/kernels/backward_params.cuh"
#include "gka/tiling/chunks.cuh"
#include "gka/tiling/mma.cuh"
#include "gka/tiling/stage.cuh"
#include "gka/tiling/warp_gemm.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

constexpr int kBwdCovThreads = 128;  // 4 warps: one m16 row slab each, full D-wide accumulators
constexpr int kBwdCovChunk = 64;

// Two CTAs per SM (228 KiB, 1 KiB reserved per CTA: <= 113 KiB of dynamic smem each; 2 x 128
// threads x <= 255 registers): one chunk's staging round trips overlap the other's products. The
// D x D states (Hbar, then G) go through a 64 x 64 piece slot (hi + lo, 16 KiB), (D/64)^2 pieces.
template <int D>
struct BwdCovSmem {
  static constexpr int kC = kBwdCovChunk;
  static constexpr int kTileKD = kC * D * 2;  // one bf16 [C][D] tile
  static constexpr int kPiece = 64;            // state pieces are kPiece x kPiece
  static constexpr int kTileP = kPiece * kPiece * 2;
  static constexpr int kK = 0;                // K hi, lo (lo unused for a bf16 K)
  static constexpr int kX = kK + 2 * kTileKD;
  static constexpr int kZ = kX + 2 * kTileKD;
  static constexpr int kState = kZ + 2 * kTileKD;  // one piece of Hbar, then of G, hi + lo
  static constexpr int kScal = kState + 2 * kTileP;
  // per-row scalars needed while the slot is live (F, w then s in place, u nu, z.Hbar x); the late
  // ones (e, d, Y sums, dF, block-reduction slots) live in the dead slot
  static constexpr int kNumScal = 4;
  static constexpr int kBytes = kScal + kNumScal * kC * 4;
  static_assert(kX % 1024 == 0 && kState % 1024 == 0, "SW128 tiles stay 1024-byte aligned");
  static_assert(kBytes <= 113 * 1024, "two CTAs per SM (228 KiB, 1 KiB reserved per CTA)");
  static_assert((9 * kC + 2 * (kBwdCovThreads / 32)) * 4 <= 2 * kTileP, "the late scalars fit in the slot");
};

namespace bwd_cov_detail {

GKA_DEVICE inline float4 load4(const float* p, int i) { return __ldg(reinterpret_cast<const float4*>(p) + i); }
GKA_DEVICE inline float4 load4(const __nv_bfloat16* p, int i) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(p) + i);
  return make_float4(tiling::bf16_lo(u.x), tiling::bf16_hi(u.x), tiling::bf16_lo(u.y), tiling::bf16_hi(u.y));
}
GKA_DEVICE inline float comp(const float4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

constexpr int kP = 64;  // state piece edge

// The 64 x 64 piece (rows r0.., columns c0..) of a D x D state -> bf16 hi [+ lo] piece tiles.
// All of a thread's loads in flight together.
template <int D, int kThreads, bool kLo, class TState>
GKA_DEVICE inline void stage_state_piece(const TState* __restrict__ src, int r0, int c0, uint8_t* hi, uint8_t* lo,
                                         int tid) {
  constexpr int kPer = kP * kP / 4 / kThreads;  // 4-element units per thread
  float4 x[kPer];
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int q = tid + u * kThreads, row = q / (kP / 4), col = 4 * (q % (kP / 4));
    x[u] = load4(src + (r0 + row) * D + c0 + col, 0);
  }
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int q = tid + u * kThreads, row = q / (kP / 4), col = 4 * (q % (kP / 4));
    uint32_t h0, l0, h1, l1;
    tiling::split_bf16(x[u].x, x[u].y, h0, l0);
    tiling::split_bf16(x[u].z, x[u].w, h1, l1);
    const uint32_t off = tiling::SwizzledTile<kP, kP>::offset(row, col);
    *reinterpret_cast<uint2*>(hi + off) = make_uint2(h0, h1);
    if (kLo) *reinterpret_cast<uint2*>(lo + off) = make_uint2(l0, l1);
  }
}

// The piece (r0.., c0..) of G = R + R^T (+ B) -> bf16 hi + lo piece tiles, summed in fp32 before
// the split. One 4 x 4 block per step: R's block (a, b) and the transposed block (b, a) as float4
// rows. Also adds this thread's parts of <R, Hbar> (rh) and <B, Hbar> (bh) from the same loads.
// kCarry: plus factor * the segmented scans' carry of G (kernels/backward_params.cuh: ChunkCarry),
// loaded in the same batch; <Hbar, R + B/2> then gains <Hbar, factor * G carry> / 2 (Hbar and B
// are symmetric), added to rh.
template <int D, int kThreads, bool kCarry, class TState, class TWs>
GKA_DEVICE inline void stage_sym_piece(const TWs* __restrict__ R, const TWs* __restrict__ B,
                                       const TState* __restrict__ H, const float* __restrict__ carry, float factor,
                                       int r0, int c0, uint8_t* hi, uint8_t* lo, int tid, float& rh, float& bh) {
  constexpr int kBlk = kP / 4;
#pragma unroll 1
  for (int q = tid; q < kBlk * kBlk; q += kThreads) {
    const int pa = 4 * (q / kBlk), pb = 4 * (q % kBlk), a = r0 + pa, bc = c0 + pb;
    float4 rr[4], rt[4], bb[4], hh[4], gc[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      rr[i] = load4(R + (a + i) * D + bc, 0);
      rt[i] = load4(R + (bc + i) * D + a, 0);
      bb[i] = B != nullptr ? load4(B + (a + i) * D + bc, 0) : make_float4(0.f, 0.f, 0.f, 0.f);
      hh[i] = load4(H + (a + i) * D + bc, 0);
      if (kCarry) gc[i] = load4(carry + (a + i) * D + bc, 0);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      rh += hh[i].x * rr[i].x + hh[i].y * rr[i].y + hh[i].z * rr[i].z + hh[i].w * rr[i].w;
      bh += hh[i].x * bb[i].x + hh[i].y * bb[i].y + hh[i].z * bb[i].z + hh[i].w * bb[i].w;
      float v[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = comp(rr[i], j) + comp(rt[j], i) + comp(bb[i], j);
      if (kCarry) {
        rh += 0.5f * factor * (hh[i].x * gc[i].x + hh[i].y * gc[i].y + hh[i].z * gc[i].z + hh[i].w * gc[i].w);
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] += factor * comp(gc[i], j);
      }
      uint32_t h0, l0, h1, l1;
      tiling::split_bf16(v[0], v[1], h0, l0);
      tiling::split_bf16(v[2], v[3], h1, l1);
      const uint32_t off = tiling::SwizzledTile<kP, kP>::offset(pa + i, pb);
      *reinterpret_cast<uint2*>(hi + off) = make_uint2(h0, h1);
      *reinterpret_cast<uint2*>(lo + off) = make_uint2(l0, l1);
    }
  }
}

// Per-row dots of a 16 x 8NT accumulator slice (rows m0 + r, m0 + r + 8; columns n0..) with the same
// rows / columns of a staged token tile (hi [+ lo]), added to s0, s1 (this lane's part; no quad
// reduction: call quad_sum once after the last slice).
template <int D, int Rows, int NT, bool kLo>
GKA_DEVICE inline void row_dot_add(const float (&acc)[NT][4], const uint8_t* hi, const uint8_t* lo, int m0, int n0,
                                   int lane, float& s0, float& s1) {
  const int r = lane >> 2, c = lane & 3;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int col = n0 + 8 * j + 2 * c;
    const uint32_t oa = tiling::SwizzledTile<D, Rows>::offset(m0 + r, col);
    const uint32_t ob = tiling::SwizzledTile<D, Rows>::offset(m0 + r + 8, col);
    const uint32_t ha = *reinterpret_cast<const uint32_t*>(hi + oa), hb = *reinterpret_cast<const uint32_t*>(hi + ob);
    const uint32_t la = kLo ? *reinterpret_cast<const uint32_t*>(lo + oa) : 0u;
    const uint32_t lb = kLo ? *reinterpret_cast<const uint32_t*>(lo + ob) : 0u;
    s0 += acc[j][0] * (tiling::bf16_lo(ha) + tiling::bf16_lo(la)) + acc[j][1] * (tiling::bf16_hi(ha) + tiling::bf16_hi(la));
    s1 += acc[j][2] * (tiling::bf16_lo(hb) + tiling::bf16_lo(lb)) + acc[j][3] * (tiling::bf16_hi(hb) + tiling::bf16_hi(lb));
  }
}
// dst[8j + 0, 1] = src[8j + 0, 1] - acc[j][2 half + 0, 1]: one accumulator row subtracted from an
// fp32 row, stored in dst's type. All loads first: dst may alias src for all the compiler knows,
// and interleaved each load would wait for the previous store (one memory round trip per tile).
template <int NT, class T>
GKA_DEVICE inline void sub_rows(T* dst, const float* src, const float (&acc)[NT][4], int half) {
  float2 v[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) v[j] = *reinterpret_cast<const float2*>(src + 8 * j);
#pragma unroll
  for (int j = 0; j < NT; ++j) gating::store2(dst + 8 * j, v[j].x - acc[j][2 * half], v[j].y - acc[j][2 * half + 1]);
}
GKA_DEVICE inline void quad_sum(float& s0, float& s1) {
#pragma unroll
  for (int o = 1; o < 4; o <<= 1) {
    s0 += __shfl_xor_sync(0xffffffffu, s0, o);
    s1 += __shfl_xor_sync(0xffffffffu, s1, o);
  }
}

}  // namespace bwd_cov_detail

// kCarry: the chunk lies before the end of its run of a segmented scan (its R-bar, B~ miss a carry).
template <int D, class TState, class TWs, bool kKLo, bool kCarry>
__device__ __forceinline__ void bwd_cov_body(const BackwardParams& p, const ChunkCarry& carry, uint8_t* smem) {
  using Smem = BwdCovSmem<D>;
  using namespace tiling;
  using namespace bwd_cov_detail;
  constexpr int C = kBwdCovChunk, NT = D / 8;  // n8 tiles of the full D columns
  constexpr int NQ = kP / 8, NP = D / kP;      // n8 tiles of a piece's columns; pieces per edge
  constexpr int kT = kBwdCovThreads, kW = kT / 32;
  constexpr bool kHLo = !std::is_same<TState, __nv_bfloat16>::value;  // a bf16 Hbar is exact
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, r = lane >> 2, c = lane & 3;
  const int slab = warp;  // rows 16 slab ..
  const int64_t cidx = blockIdx.x, h = blockIdx.y, hk = h / p.group;
  const ChunkEntry ce = p.geo.chunk_entry(cidx);
  if (ce.seq < 0) return;
  const int64_t b = p.geo.varlen ? 0 : ce.seq, t0 = ce.t0;
  const int len = ce.len;
  const bool lam = p.bp_lambda;
  const int64_t soff = (cidx * p.heads_q + h) * D * D;
  const TState* hbar = static_cast<const TState*>(p.states_h) + soff;
  const TWs* rbar = static_cast<const TWs*>(p.ws.r_end) + soff;
  const TWs* btil = lam ? static_cast<const TWs*>(p.ws.b_end) + soff : nullptr;
  const float* g_carry = kCarry ? carry_ptr<D>(p, carry, 2) : nullptr;  // of G = R + R^T (+ B): decays with f

  uint8_t* k_hi = smem + Smem::kK;
  uint8_t* k_lo = k_hi + Smem::kTileKD;
  uint8_t* x_hi = smem + Smem::kX;
  uint8_t* x_lo = x_hi + Smem::kTileKD;
  uint8_t* z_hi = smem + Smem::kZ;
  uint8_t* z_lo = z_hi + Smem::kTileKD;
  uint8_t* s_hi = smem + Smem::kState;
  uint8_t* s_lo = s_hi + Smem::kTileP;
  float* sc = reinterpret_cast<float*>(smem + Smem::kScal);
  float* F = sc;              // chunk-local cumsum of f
  float* s_s = sc + 1 * C;    // w (0 past len or without bp_lambda), then in place s_m = sum_{j>=m} e^{2(F_j - F_m)} w_j
  float* unu_s = sc + 2 * C;  // u nu
  float* gx_s = sc + 3 * C;   // z_i . Hbar x_i
  float* late = reinterpret_cast<float*>(s_hi);  // the state slot, once G k is formed
  float* e_s = late;             // e_i
  float* d_s = late + 1 * C;     // d_i
  float* rowy_s = late + 2 * C;  // sum_l Y_il
  float* coly_s = late + 3 * C;  // [4 slabs][C]: sum over the slab's rows of Y_li
  float* df_s = late + 7 * C;    // dF_pre
  float* rev_s = late + 8 * C;   // its reversed cumsum
  float* red = late + 9 * C;     // block reduction slots [2][kW]

  // ---- gates and per-token scalars ----------------------------------------------------------------
  if (warp == 0) {
    for (int t = lane; t < C; t += 32) F[t] = t < len ? p.gate_h.at(b, t0 + t, h) : 0.f;
    __syncwarp();
    gating::warp_cumsum64(F, len, lane);
  } else if (warp == 1) {
    for (int t = lane; t < C; t += 32) {
      const bool v = lam && t < len;
      s_s[t] = v ? static_cast<const float*>(p.ws.w.data)[p.ws.w.offset(b, t0 + t, h)] : 0.f;
      unu_s[t] = v ? static_cast<const float*>(p.ws.unu.data)[p.ws.unu.offset(b, t0 + t, h)] : 0.f;
    }
  }

  // ---- operand tiles: K (kv head), X, Z (query head), Hbar's first piece into the state slot --------
  // lo tiles only where the operand is not bf16-exact (K from a bf16 input, a bf16 Hbar: no lo)
  stage_token_tile<C, D, kT, kKLo>(p.k, b, t0, hk, len, nullptr, k_hi, k_lo, tid);
  stage_token_tile<C, D, kT, true>(p.x, b, t0, h, len, nullptr, x_hi, x_lo, tid);
  stage_token_tile<C, D, kT, true>(p.ws.z, b, t0, h, len, nullptr, z_hi, z_lo, tid);
  stage_state_piece<D, kT, kHLo>(hbar, 0, 0, s_hi, s_lo, tid);
  __syncthreads();  // F, w, tiles visible

  // s by a stable reverse recurrence, in place over w (one thread, 64 steps: cheap next to the products)
  if (lam && tid == 0) {
    float s = 0.f;
    for (int m = C - 1; m >= 0; --m) {
      s = m < len ? s_s[m] + (m + 1 < len ? gating::decay(2.f * F[m + 1], 2.f * F[m]) * s : 0.f) : 0.f;
      s_s[m] = s;
    }
  }

  const int m0 = 16 * slab, ra = m0 + r, rb = ra + 8;
  const SplitTile tK{smem_addr(k_hi), smem_addr(k_lo)}, tX{smem_addr(x_hi), smem_addr(x_lo)};
  const SplitTile tZ{smem_addr(z_hi), smem_addr(z_lo)}, tS{smem_addr(s_hi), smem_addr(s_lo)};
  float dk[NT][4];
  zero_acc(dk);

  // ---- Hbar, piece by piece (rows rh, columns ch: output columns rh of Hbar x, k-steps ch):
  //      z_i . Hbar x_i, and the lambda part's b_i Hbar k_i ---------------------------------------------
  {
    float g0 = 0.f, g1 = 0.f;
#pragma unroll  // dk's indices stay compile-time
    for (int rh = 0; rh < NP; ++rh) {
      float tx[NQ][4], tk[NQ][4];
      zero_acc(tx);
      zero_acc(tk);
#pragma unroll 1
      for (int ch = 0; ch < NP; ++ch) {
        gemm_nk2_kpiece<kP, D, C, kP, kP, NQ, true, kHLo>(tx, tX, tS, m0, kP * ch, 0, lane);  // (Hbar x_i)_n
        if (lam) gemm_nk2_kpiece<kP, D, C, kP, kP, NQ, kKLo, kHLo>(tk, tK, tS, m0, kP * ch, 0, lane);  // (Hbar k_i)_n
        __syncthreads();  // the piece is consumed (and s is visible)
        const int q = rh * NP + ch + 1;
        if (q < NP * NP) {
          stage_state_piece<D, kT, kHLo>(hbar, kP * (q / NP), kP * (q % NP), s_hi, s_lo, tid);
          __syncthreads();
        }
      }
      row_dot_add<D, C, NQ, true>(tx, z_hi, z_lo, m0, kP * rh, lane, g0, g1);
      if (lam) {
        const float ba = ra < len ? __expf(F[ra]) * s_s[ra] : 0.f, bb = rb < len ? __expf(F[rb]) * s_s[rb] : 0.f;
#pragma unroll
        for (int j = 0; j < NQ; ++j) {
          dk[rh * NQ + j][0] = ba * tk[j][0];
          dk[rh * NQ + j][1] = ba * tk[j][1];
          dk[rh * NQ + j][2] = bb * tk[j][2];
          dk[rh * NQ + j][3] = bb * tk[j][3];
        }
      }
    }
    quad_sum(g0, g1);
    if (c == 0) {
      gx_s[ra] = g0;
      gx_s[rb] = g1;
    }
  }

  // ---- tau_i G k_i; e_i = 1/2 tau_i k_i . G k_i, G = R + R^T (+ B) piece by piece; <R, Hbar> and
  //      <B, Hbar> (plain block reduction, fixed order) from the loads that stage G -----------------------
  const float Fend = F[len - 1];
  const float ta = ra < len ? gating::decay(Fend, F[ra]) : 0.f, tb = rb < len ? gating::decay(Fend, F[rb]) : 0.f;
  float rhs = 0.f, bhs = 0.f;
  // G's piece (r0, c0) into the slot with its parts of <R, Hbar>, <B, Hbar>
  auto stage_g = [&](int r0, int c0) {
    stage_sym_piece<D, kT, kCarry>(rbar, btil, hbar, g_carry, carry.factor, r0, c0, s_hi, s_lo, tid, rhs, bhs);
  };
  {
    float e0 = 0.f, e1 = 0.f;
    stage_g(0, 0);
    __syncthreads();
#pragma unroll  // dk's indices stay compile-time
    for (int rh = 0; rh < NP; ++rh) {
      float tg[NQ][4];
      zero_acc(tg);
#pragma unroll 1
      for (int ch = 0; ch < NP; ++ch) {
        gemm_nk2_kpiece<kP, D, C, kP, kP, NQ, kKLo, true>(tg, tK, tS, m0, kP * ch, 0, lane);
        __syncthreads();  // the piece is consumed (after the last one: the late scalars take the slot)
        const int q = rh * NP + ch + 1;
        if (q < NP * NP) {
          stage_g(kP * (q / NP), kP * (q % NP));
          __syncthreads();
        }
      }
      row_dot_add<D, C, NQ, kKLo>(tg, k_hi, k_lo, m0, kP * rh, lane, e0, e1);
#pragma unroll
      for (int j = 0; j < NQ; ++j) {
        dk[rh * NQ + j][0] += ta * tg[j][0];
        dk[rh * NQ + j][1] += ta * tg[j][1];
        dk[rh * NQ + j][2] += tb * tg[j][2];
        dk[rh * NQ + j][3] += tb * tg[j][3];
      }
    }
    quad_sum(e0, e1);
    if (c == 0) {
      e_s[ra] = 0.5f * ta * e0;
      e_s[rb] = 0.5f * tb * e1;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      rhs += __shfl_xor_sync(0xffffffffu, rhs, o);
      bhs += __shfl_xor_sync(0xffffffffu, bhs, o);
    }
    if (lane == 0) {
      red[warp] = rhs;
      red[kW + warp] = bhs;
    }
  }

  // ---- lambda part, intra: ((K K^T) o W) K ------------------------------------------------------------
  if (lam) {
    float S[C / 8][4];
    zero_acc(S);
    gemm_nk2<D, C, D, C, C / 8, kKLo, kKLo>(S, tK, tK, m0, 0, lane);
#pragma unroll
    for (int j = 0; j < C / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e < 2 ? ra : rb, l = acc_col(lane, j, e);
        const int mx = i > l ? i : l, mn = i > l ? l : i;
        S[j][e] = (i < len && l < len) ? S[j][e] * gating::decay(F[mx], F[mn]) * s_s[mx] : 0.f;
      }
    uint32_t ah[C / 16][4], al[C / 16][4];
    acc_to_a_split_all<C>(S, ah, al);
    gemm_rkn2<C, D, C, NT, true, kKLo>(dk, ah, al, tK, 0, lane);
  }
  {
    float d0 = 0.f, d1 = 0.f;
    row_dot_add<D, C, NT, kKLo>(dk, k_hi, k_lo, m0, 0, lane, d0, d1);
    quad_sum(d0, d1);
    if (c == 0) {
      d_s[ra] = 0.5f * d0;
      d_s[rb] = 0.5f * d1;
    }
  }

  // ---- rank-1 intra part: P = (K X^T) o U, Q' = K Z^T, Y = P o Q' -> P Z + (Q' o U) X ------------------
  // U is upper triangular: the slab's rows need token columns >= 16 slab only (n16 pairs / k16
  // steps below slab are skipped; their entries are masked to zero anyway).
  {
    float P[C / 8][4], Q[C / 8][4];
    zero_acc(P);
    zero_acc(Q);
    gemm_nk2<D, C, D, C, C / 8, kKLo, true>(P, tK, tX, m0, 0, lane, slab);
    gemm_nk2<D, C, D, C, C / 8, kKLo, true>(Q, tK, tZ, m0, 0, lane, slab);
    float ya = 0.f, yb = 0.f;
    float col[C / 8][2];
#pragma unroll
    for (int j = 0; j < C / 8; ++j) {
      float y[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e < 2 ? ra : rb, l = acc_col(lane, j, e);
        const float u = (l >= i && l < len) ? gating::decay(F[l], F[i]) : 0.f;
        P[j][e] *= u;
        y[e] = P[j][e] * Q[j][e];
        Q[j][e] *= u;
      }
      ya += y[0] + y[1];
      yb += y[2] + y[3];
      col[j][0] = y[0] + y[2];
      col[j][1] = y[1] + y[3];
    }
    quad_sum(ya, yb);
#pragma unroll
    for (int j = 0; j < C / 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e)
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) col[j][e] += __shfl_xor_sync(0xffffffffu, col[j][e], o);
    if (c == 0) {
      rowy_s[ra] = ya;
      rowy_s[rb] = yb;
    }
    if (r == 0)
#pragma unroll
      for (int j = 0; j < C / 8; ++j) {
        coly_s[slab * C + 8 * j + 2 * c] = col[j][0];
        coly_s[slab * C + 8 * j + 2 * c + 1] = col[j][1];
      }
    uint32_t ah[C / 16][4], al[C / 16][4];
    acc_to_a_split_all<C>(P, ah, al);
    gemm_rkn2<C, D, C, NT, true, true>(dk, ah, al, tZ, 0, lane, slab);
    acc_to_a_split_all<C>(Q, ah, al);
    gemm_rkn2<C, D, C, NT, true, true>(dk, ah, al, tX, 0, lane, slab);
  }

  // ---- dk^H = -dk_pre, added to the GLA part (same thread reads and writes each element); with
  //      direct_dkv (group == 1) the sum is final and goes to the output in its dtype -----------------
  {
    const TokenTensor& out = p.direct_dkv ? p.dk_out : p.ws.dk;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = half ? rb : ra;
      if (row >= len) continue;
      const float* src = static_cast<const float*>(p.ws.dk.data) + p.ws.dk.offset(b, t0 + row, h) + 2 * c;
      const int64_t dst = out.offset(b, t0 + row, h) + 2 * c;
      // one dtype dispatch outside the stores
      if (out.dtype == DType::kBF16) sub_rows(static_cast<__nv_bfloat16*>(out.data) + dst, src, dk, half);
      else if (out.dtype == DType::kFP16) sub_rows(static_cast<__half*>(out.data) + dst, src, dk, half);
      else sub_rows(static_cast<float*>(out.data) + dst, src, dk, half);
    }
  }
  __syncthreads();  // row scalars visible

  // ---- dF_pre per row, the chunk-end terms, Pass F ------------------------------------------------------
  if (tid < C) {
    const int i = tid;
    float dF = 0.f;
    if (i < len) {
      dF = (coly_s[i] + coly_s[C + i] + coly_s[2 * C + i] + coly_s[3 * C + i]) - rowy_s[i] + __expf(F[i]) * gx_s[i] -
           d_s[i] + unu_s[i];
      if (i == len - 1) {
        float es = 0.f;
        for (int l = 0; l < len; ++l) es += e_s[l];
        float rs = 0.f, bs = 0.f;
#pragma unroll
        for (int q = 0; q < kW; ++q) {
          rs += red[q];
          bs += red[kW + q];
        }
        dF += es + __expf(Fend) * (rs + 0.5f * bs);
      }
    }
    df_s[i] = dF;
  }
  __syncthreads();
  if (warp == 0) {
    for (int t = lane; t < C; t += 32) rev_s[t] = t < len ? df_s[len - 1 - t] : 0.f;
    __syncwarp();
    gating::warp_cumsum64(rev_s, len, lane);  // rev_s[t] = sum_{l >= len-1-t} dF_pre_l
    __syncwarp();
    for (int j = lane; j < len; j += 32) {
      const float df = -rev_s[len - 1 - j];
      const int64_t tok = t0 + j;
      const float dgs = (p.dg.data != nullptr) ? static_cast<const float*>(p.ws.dg_s.data)[p.ws.dg_s.offset(b, tok, h)] : 0.f;
      if (p.f_given) {
        if ((p.df.data != nullptr)) static_cast<float*>(p.df.data)[p.df.offset(b, tok, h)] = df;
        if ((p.dg.data != nullptr)) static_cast<float*>(p.dg.data)[p.dg.offset(b, tok, h)] = dgs;
      } else if ((p.dg.data != nullptr)) {
        static_cast<float*>(p.dg.data)[p.dg.offset(b, tok, h)] = dgs + df;
      }
    }
  }
}

// TState: the forward's H-bar; TWs: R-bar and B~ as the reverse scan stored them (fp32, or bf16).
// kCarry: this launch covers the chunks whose R-bar, B~ miss a segmented scan's carry (a second
// launch, only with segments; see bwd_gla_kernel).
template <int D, class TState, class TWs = float, bool kCarry = false>
__global__ void __launch_bounds__(kBwdCovThreads, 2) bwd_cov_kernel(BackwardParams p) {
  // no alignment padding (the layout is exactly 113 KiB at D = 128): SW128 tiles only need
  // 128-byte alignment for conflict-free ldmatrix (the swizzle is applied to tile offsets)
  extern __shared__ __align__(1024) uint8_t smem[];
  // a bf16 K is exact in bf16: no lo tile, no lo products (bitwise the same results)
  // the chunks of the other launch exit (kCarry: those whose R-bar, B~ miss a segment carry)
  ChunkCarry cc;
  if (p.seg.count > 1) {  // without segments nothing to look up: the one launch runs every chunk
    const tiling::ChunkEntry ce = p.geo.chunk_entry(blockIdx.x);
    if (ce.seq >= 0) cc = chunk_carry<D>(p, blockIdx.x, ce, blockIdx.y, false);
  }
  if ((cc.index >= 0) != kCarry) return;
  if (p.k.dtype == DType::kBF16) bwd_cov_body<D, TState, TWs, false, kCarry>(p, cc, smem);
  else bwd_cov_body<D, TState, TWs, true, kCarry>(p, cc, smem);
}

}  // namespace kernels
GKA_NAMESPACE_END
