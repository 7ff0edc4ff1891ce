// gka/solver/chebyshev_tc.cuh: the chunked Chebyshev iteration on tensor cores (spec 2.3, 3.4) in
// the delta/residual form of hopper-design.md 1.2 with the Gamma-scaled accumulator of 1.3.
//
// One warp owns 16 rows (tokens) of a chunk. Per row j the state is
//   Dh  (bf16 A fragments)  the step D_i, exactly as it enters the MMAs,
//   X   (fp32)              xi_i = sum of the rounded steps,
//   E   (fp32 accumulator)  the residual (A xi_i - q) scaled by 1/Gamma'_j, Gamma'_j = max(Gamma_j, e^-60),
// and one matvec round is  E += Dh Hbar + P K,  P = (Dh K^T) o M,  M_ji = L_ji / Gamma'_j.
// The update is  D <- bf16((w-1) D - w u_j E),  X += D,  E += v_j D  with u = eta Gamma', v = lambda / Gamma'.
// Because the rounded step is what both X and E receive, rounding perturbs the step, never the
// consistency of (X, E).
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/solver/nu.cuh"
#include "gka/tiling/mma.cuh"
#include "gka/tiling/wgmma.cuh"

GKA_NAMESPACE_BEGIN
namespace solver {

// Shared-memory operands of one chunk (bf16, swizzled; *_lo only with the split policy).
struct ChunkOperands {
  uint32_t hbar_hi, hbar_lo;  // [D][D] H-bar (symmetric: read as [n][k])
  uint32_t k_hi, k_lo;        // [C][D] keys
  const float4* mask;         // M in fragment order: [warp][n8 tile][lane] float4
};

// One matvec round: E += Dh Hbar + ((Dh K^T) o M) K for the warp's 16 rows. Token blocks past the
// warp's own rows are skipped (causal mask).
template <int D, bool kSplit>
GKA_DEVICE inline void matvec_round(float (&E)[D / 8][4], const uint32_t (&Dh)[D / 16][4], const ChunkOperands& op,
                                    int warp, int lane) {
  using namespace tiling;
  float S[8][4];
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) S[j][e] = 0.f;
  // S = Dh K^T (16 x 64), causal: token blocks 0..warp
#pragma unroll
  for (int kt = 0; kt < D / 16; ++kt) {
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      if (np > warp) continue;
      uint32_t b[4];
      load_b_nk<D, kChunkRows>(op.k_hi, 16 * np, 16 * kt, lane, b);
      mma_bf16(S[2 * np], Dh[kt], b[0], b[1]);
      mma_bf16(S[2 * np + 1], Dh[kt], b[2], b[3]);
      if constexpr (kSplit) {
        load_b_nk<D, kChunkRows>(op.k_lo, 16 * np, 16 * kt, lane, b);
        mma_bf16(S[2 * np], Dh[kt], b[0], b[1]);
        mma_bf16(S[2 * np + 1], Dh[kt], b[2], b[3]);
      }
    }
  }
  // E += Dh Hbar
#pragma unroll
  for (int kt = 0; kt < D / 16; ++kt) {
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      uint32_t b[4];
      load_b_nk<D, D>(op.hbar_hi, 16 * np, 16 * kt, lane, b);
      mma_bf16(E[2 * np], Dh[kt], b[0], b[1]);
      mma_bf16(E[2 * np + 1], Dh[kt], b[2], b[3]);
      if constexpr (kSplit) {
        load_b_nk<D, D>(op.hbar_lo, 16 * np, 16 * kt, lane, b);
        mma_bf16(E[2 * np], Dh[kt], b[0], b[1]);
        mma_bf16(E[2 * np + 1], Dh[kt], b[2], b[3]);
      }
    }
  }
  // P = (S o M) -> bf16 (hi [+ lo]); E += P K
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    if (kt > warp) continue;
    const float4 m0 = op.mask[(warp * 8 + 2 * kt) * 32 + lane];
    const float4 m1 = op.mask[(warp * 8 + 2 * kt + 1) * 32 + lane];
    const float s0[4] = {S[2 * kt][0] * m0.x, S[2 * kt][1] * m0.y, S[2 * kt][2] * m0.z, S[2 * kt][3] * m0.w};
    const float s1[4] = {S[2 * kt + 1][0] * m1.x, S[2 * kt + 1][1] * m1.y, S[2 * kt + 1][2] * m1.z,
                         S[2 * kt + 1][3] * m1.w};
    uint32_t ph[4], pl[4];
    if constexpr (kSplit) acc_to_a_split(s0, s1, ph, pl);
    else acc_to_a(s0, s1, ph);
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      uint32_t b[4];
      load_b_kn<D, kChunkRows>(op.k_hi, 16 * np, 16 * kt, lane, b);
      mma_bf16(E[2 * np], ph, b[0], b[1]);
      mma_bf16(E[2 * np + 1], ph, b[2], b[3]);
      if constexpr (kSplit) {
        mma_bf16(E[2 * np], pl, b[0], b[1]);
        mma_bf16(E[2 * np + 1], pl, b[2], b[3]);
        load_b_kn<D, kChunkRows>(op.k_lo, 16 * np, 16 * kt, lane, b);
        mma_bf16(E[2 * np], ph, b[0], b[1]);
        mma_bf16(E[2 * np + 1], ph, b[2], b[3]);
      }
    }
  }
}

// The same round on the sm_90a backend (bf16 policy only): one warpgroup owns the chunk and issues
// S = Dh K^T (m64n64), E += Dh Hbar (m64nD) and E += P K (m64nD, K read MN-major) as RS wgmma with
// B from the SW128 tiles. The full 64 x 64 S is formed (no causal skipping): M is zero above the
// diagonal, so P is too. The mask multiply overlaps the in-flight Dh Hbar group.
template <int D>
GKA_DEVICE inline void matvec_round_wg(float (&E)[D / 8][4], uint32_t (&Dh)[D / 16][4], const ChunkOperands& op,
                                       int warp, int lane) {
  namespace wg = tiling::wg;
  float S[8][4];
  uint32_t P[4][4];
  wg::pin<D / 2>(&E[0][0]);
  wg::pin<D / 4>(&Dh[0][0]);
  wg::fence();
  wg::mma_rs_zero<64, 0>(&S[0][0], Dh[0], wg::desc_kmajor<kChunkRows>(op.k_hi, 0));
#pragma unroll
  for (int kt = 1; kt < D / 16; ++kt) wg::mma_rs<64, 0>(&S[0][0], Dh[kt], wg::desc_kmajor<kChunkRows>(op.k_hi, kt));
  wg::commit();
#pragma unroll
  for (int kt = 0; kt < D / 16; ++kt) wg::mma_rs<D, 0>(&E[0][0], Dh[kt], wg::desc_kmajor<D>(op.hbar_hi, kt));
  wg::commit();
  wg::wait<1>();
  wg::pin<32>(&S[0][0]);
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    const float4 m0 = op.mask[(warp * 8 + 2 * kt) * 32 + lane];
    const float4 m1 = op.mask[(warp * 8 + 2 * kt + 1) * 32 + lane];
    const float s0[4] = {S[2 * kt][0] * m0.x, S[2 * kt][1] * m0.y, S[2 * kt][2] * m0.z, S[2 * kt][3] * m0.w};
    const float s1[4] = {S[2 * kt + 1][0] * m1.x, S[2 * kt + 1][1] * m1.y, S[2 * kt + 1][2] * m1.z,
                         S[2 * kt + 1][3] * m1.w};
    tiling::acc_to_a(s0, s1, P[kt]);
  }
  wg::pin<16>(&P[0][0]);
  wg::fence();
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) wg::mma_rs<D, 1>(&E[0][0], P[kt], wg::desc_mnmajor<kChunkRows>(op.k_hi, kt));
  wg::commit();
  wg::wait<0>();
  wg::pin<D / 2>(&E[0][0]);
  wg::pin<D / 4>(&Dh[0][0]);
  wg::pin<16>(&P[0][0]);
}

// Per-row scalars of the two rows (r, r + 8) a thread touches.
struct RowScalars {
  float u[2];  // eta * Gamma'
  float v[2];  // lambda / Gamma'
};

// D <- bf16((w - 1) D - w u E); X += D; (E += v D when another round follows).
template <int D>
GKA_DEVICE inline void chebyshev_update(float (&E)[D / 8][4], float (&X)[D / 8][4], uint32_t (&Dh)[D / 16][4],
                                        const RowScalars& rs, float omega, bool more) {
  using namespace tiling;
  const float om1 = omega - 1.f;
  const float nwu0 = -omega * rs.u[0], nwu1 = -omega * rs.u[1];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
#pragma unroll
    for (int p = 0; p < 2; ++p) {  // p = 0: row r, p = 1: row r + 8
      uint32_t& reg = Dh[j >> 1][(j & 1) * 2 + p];
      const float nwu = p ? nwu1 : nwu0, v = rs.v[p];
      const float d0 = fmaf(nwu, E[j][2 * p], om1 * bf16_lo(reg));
      const float d1 = fmaf(nwu, E[j][2 * p + 1], om1 * bf16_hi(reg));
      reg = pack_bf16(d0, d1);
      const float r0 = bf16_lo(reg), r1 = bf16_hi(reg);
      X[j][2 * p] += r0;
      X[j][2 * p + 1] += r1;
      if (more) {
        E[j][2 * p] = fmaf(v, r0, E[j][2 * p]);
        E[j][2 * p + 1] = fmaf(v, r1, E[j][2 * p + 1]);
      }
    }
  }
}

}  // namespace solver
GKA_NAMESPACE_END
