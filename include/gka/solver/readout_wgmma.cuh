// gka/solver/readout_wgmma.cuh: the GLA read-out products of one chunk (spec 3.5) on the sm_90a
// backend, bf16 policy (single-bf16 K and V; q~ and S-bar as hi + lo splits):
//
//   O = Gamma_g o (Qh S_hi + Ql S_hi + Qh S_lo) + P V,   P = (Qh K^T + Ql K^T) o L_g  (P as hi + lo)
//
// One warpgroup, wgmma RS: S-bar [k][n] and V [token][n] are MN-major B tiles, K is K-major. The
// element maps are those of the mma.sync read-out, so the kernel's scaling and stores are shared.
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/solver/nu.cuh"
#include "gka/tiling/mma.cuh"
#include "gka/tiling/wgmma.cuh"

GKA_NAMESPACE_BEGIN
namespace solver {

// s_hi / s_lo: S-bar tiles (D x D), k_hi: keys, v_hi: values (kChunkRows x D), all SW128 and
// visible to the async proxy. G: chunk-local cumsum of g; rows >= len give zero intra terms.
// kSLo = false: S-bar is exactly its hi part (bf16 chunk states), so the Qh S_lo products are skipped.
template <int D, bool kSLo = true>
GKA_DEVICE inline void readout_wg(float (&O)[D / 8][4], uint32_t (&Qh)[D / 16][4], uint32_t (&Ql)[D / 16][4],
                                  uint32_t s_hi, uint32_t s_lo, uint32_t k_hi, uint32_t v_hi, const float* G, int len,
                                  int warp, int lane) {
  namespace wg = tiling::wg;
  const int r = lane >> 2, c = lane & 3, row_a = 16 * warp + r, row_b = row_a + 8;
  float S[8][4];
  wg::pin<D / 4>(&Qh[0][0]);
  wg::pin<D / 4>(&Ql[0][0]);
  wg::fence();
  // inter-chunk part
  wg::mma_rs_zero<D, 1>(&O[0][0], Qh[0], wg::desc_mnmajor<D>(s_hi, 0));
#pragma unroll
  for (int kt = 1; kt < D / 16; ++kt) wg::mma_rs<D, 1>(&O[0][0], Qh[kt], wg::desc_mnmajor<D>(s_hi, kt));
#pragma unroll
  for (int kt = 0; kt < D / 16; ++kt) wg::mma_rs<D, 1>(&O[0][0], Ql[kt], wg::desc_mnmajor<D>(s_hi, kt));
  if constexpr (kSLo) {
#pragma unroll
    for (int kt = 0; kt < D / 16; ++kt) wg::mma_rs<D, 1>(&O[0][0], Qh[kt], wg::desc_mnmajor<D>(s_lo, kt));
  }
  wg::commit();
  // intra-chunk scores
  wg::mma_rs_zero<64, 0>(&S[0][0], Qh[0], wg::desc_kmajor<kChunkRows>(k_hi, 0));
#pragma unroll
  for (int kt = 1; kt < D / 16; ++kt) wg::mma_rs<64, 0>(&S[0][0], Qh[kt], wg::desc_kmajor<kChunkRows>(k_hi, kt));
#pragma unroll
  for (int kt = 0; kt < D / 16; ++kt) wg::mma_rs<64, 0>(&S[0][0], Ql[kt], wg::desc_kmajor<kChunkRows>(k_hi, kt));
  wg::commit();
  wg::wait<0>();
  wg::pin<D / 2>(&O[0][0]);
  wg::pin<32>(&S[0][0]);
  {
    const float g0 = __expf(G[row_a]), g1 = __expf(G[row_b]);
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      O[j][0] *= g0; O[j][1] *= g0; O[j][2] *= g1; O[j][3] *= g1;
    }
  }
  uint32_t ph[4][4], pl[4][4];
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    float s0[4], s1[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = e < 2 ? row_a : row_b;
      const int i0 = 16 * kt + 2 * c + (e & 1), i1 = i0 + 8;
      s0[e] = (i0 <= j && j < len) ? S[2 * kt][e] * gating::decay(G[j], G[i0]) : 0.f;
      s1[e] = (i1 <= j && j < len) ? S[2 * kt + 1][e] * gating::decay(G[j], G[i1]) : 0.f;
    }
    tiling::acc_to_a_split(s0, s1, ph[kt], pl[kt]);
  }
  wg::pin<16>(&ph[0][0]);
  wg::pin<16>(&pl[0][0]);
  wg::pin<D / 2>(&O[0][0]);
  wg::fence();
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    wg::mma_rs<D, 1>(&O[0][0], ph[kt], wg::desc_mnmajor<kChunkRows>(v_hi, kt));
    wg::mma_rs<D, 1>(&O[0][0], pl[kt], wg::desc_mnmajor<kChunkRows>(v_hi, kt));
  }
  wg::commit();
  wg::wait<0>();
  wg::pin<D / 2>(&O[0][0]);
  wg::pin<16>(&ph[0][0]);
  wg::pin<16>(&pl[0][0]);
}

}  // namespace solver
GKA_NAMESPACE_END
