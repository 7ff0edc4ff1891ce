// gka/solver/nu.cuh: per-token Frobenius norms nu_j = ||H_j||_F of a chunk without forming H_j
// (spec 3.3), from three non-negative terms
//   nu_j^2 = Gamma_j^2 ||Hbar||^2  +  2 Gamma_j sum_{i<=j} L_ji p_i  +  sum_l L_jl (L W2)_jl,
//   p_i = k_i^T Hbar k_i,  W2 = (K K^T) o (K K^T).
// T1 is reduced while Hbar is loaded; p and W2 come from tensor-core products (hi/lo split
// operands under the split policy); L W2 is an fp32-faithful hi/lo product (three bf16 MMAs).
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/tiling/mma.cuh"
#include "gka/tiling/wgmma.cuh"

GKA_NAMESPACE_BEGIN
namespace solver {

constexpr int kPadC = 68;       // pitch (floats) of the fp32 C x C scratch matrices
constexpr int kChunkRows = 64;  // token rows of a chunk tile (C)

// Value of element (row, col) of a swizzled bf16 tile (hi [+ lo]).
template <int Cols, int Rows, bool kSplit>
GKA_DEVICE inline float tile_value(const uint8_t* hi, const uint8_t* lo, int row, int col) {
  const uint32_t off = tiling::SwizzledTile<Cols, Rows>::offset(row, col);
  float x = __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(hi + off));
  if (kSplit) x += __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(lo + off));
  return x;
}

// W2 = (K K^T)^2 elementwise into w2[C][kPadC] (fp32) and p_i = k_i^T Hbar k_i into p[C].
template <int D, bool kSplit>
GKA_DEVICE inline void gram_and_quadratic(const uint8_t* k_hi, const uint8_t* k_lo, uint32_t sk_hi, uint32_t sk_lo,
                                          uint32_t sh_hi, uint32_t sh_lo, float* w2, float* p, int warp,
                                          int lane) {
  using namespace tiling;
  const int r = lane >> 2, c = lane & 3, m0 = 16 * warp;
  {
    float W[8][4] = {};
#pragma unroll
    for (int kt = 0; kt < D / 16; ++kt) {
      uint32_t ah[4], al[4];
      load_a<D, kChunkRows>(sk_hi, m0, 16 * kt, lane, ah);
      if constexpr (kSplit) load_a<D, kChunkRows>(sk_lo, m0, 16 * kt, lane, al);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b[4];
        load_b_nk<D, kChunkRows>(sk_hi, 16 * np, 16 * kt, lane, b);
        mma_bf16(W[2 * np], ah, b[0], b[1]);
        mma_bf16(W[2 * np + 1], ah, b[2], b[3]);
        if constexpr (kSplit) {
          mma_bf16(W[2 * np], al, b[0], b[1]);
          mma_bf16(W[2 * np + 1], al, b[2], b[3]);
          load_b_nk<D, kChunkRows>(sk_lo, 16 * np, 16 * kt, lane, b);
          mma_bf16(W[2 * np], ah, b[0], b[1]);
          mma_bf16(W[2 * np + 1], ah, b[2], b[3]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = m0 + r + (e >= 2 ? 8 : 0), col = 8 * j + 2 * c + (e & 1);
        w2[row * kPadC + col] = W[j][e] * W[j][e];
      }
  }
  {
    float Y[D / 8][4] = {};
#pragma unroll
    for (int kt = 0; kt < D / 16; ++kt) {
      uint32_t ah[4], al[4];
      load_a<D, kChunkRows>(sk_hi, m0, 16 * kt, lane, ah);
      if constexpr (kSplit) load_a<D, kChunkRows>(sk_lo, m0, 16 * kt, lane, al);
#pragma unroll
      for (int np = 0; np < D / 16; ++np) {
        uint32_t b[4];
        load_b_nk<D, D>(sh_hi, 16 * np, 16 * kt, lane, b);
        mma_bf16(Y[2 * np], ah, b[0], b[1]);
        mma_bf16(Y[2 * np + 1], ah, b[2], b[3]);
        if constexpr (kSplit) {
          mma_bf16(Y[2 * np], al, b[0], b[1]);
          mma_bf16(Y[2 * np + 1], al, b[2], b[3]);
          load_b_nk<D, D>(sh_lo, 16 * np, 16 * kt, lane, b);
          mma_bf16(Y[2 * np], ah, b[0], b[1]);
          mma_bf16(Y[2 * np + 1], ah, b[2], b[3]);
        }
      }
    }
    float acc0 = 0.f, acc1 = 0.f;
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = m0 + r + (e >= 2 ? 8 : 0), col = 8 * j + 2 * c + (e & 1);
        const float kv = tile_value<D, kChunkRows, kSplit>(k_hi, k_lo, row, col);
        if (e < 2) acc0 += Y[j][e] * kv; else acc1 += Y[j][e] * kv;
      }
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
      acc0 += __shfl_xor_sync(0xffffffffu, acc0, o);
      acc1 += __shfl_xor_sync(0xffffffffu, acc1, o);
    }
    if (c == 0) {
      p[m0 + r] = acc0;
      p[m0 + r + 8] = acc1;
    }
  }
}

// L_ji = exp(F_j - F_i) for i <= j < len, else 0 (F: chunk-local cumsum of the H gate). Formed
// where it is used, so no C x C scratch holds it.
GKA_DEVICE inline float decay_lower(const float* F, int len, int j, int i) {
  return (i <= j && j < len) ? __expf(F[j] - F[i]) : 0.f;
}

// t3[j] = sum_l L_jl (L W2)_jl for the warp's 16 rows; W2 fp32 [C][kPadC].
GKA_DEVICE inline void intra_norm_sq(const float* F, int len, const float* w2, float* t3, int warp, int lane) {
  using namespace tiling;
  const int r = lane >> 2, c = lane & 3, m0 = 16 * warp, ja = m0 + r, jb = ja + 8;
  float R[8][4] = {};
  // L is lower triangular: k blocks 0..warp. Not unrolled: the body runs warp + 1 times and a
  // rolled loop keeps the prologue's code (instruction-cache bound) short.
#pragma unroll 1
  for (int kt = 0; kt <= warp; ++kt) {
    const int k0 = 16 * kt + 2 * c;
    uint32_t ah[4], al[4];
    split_bf16(decay_lower(F, len, ja, k0), decay_lower(F, len, ja, k0 + 1), ah[0], al[0]);
    split_bf16(decay_lower(F, len, jb, k0), decay_lower(F, len, jb, k0 + 1), ah[1], al[1]);
    split_bf16(decay_lower(F, len, ja, k0 + 8), decay_lower(F, len, ja, k0 + 9), ah[2], al[2]);
    split_bf16(decay_lower(F, len, jb, k0 + 8), decay_lower(F, len, jb, k0 + 9), ah[3], al[3]);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int n = 8 * j + r;
      uint32_t bh0, bl0, bh1, bl1;
      split_bf16(w2[k0 * kPadC + n], w2[(k0 + 1) * kPadC + n], bh0, bl0);
      split_bf16(w2[(k0 + 8) * kPadC + n], w2[(k0 + 9) * kPadC + n], bh1, bl1);
      mma_bf16(R[j], ah, bh0, bh1);
      mma_bf16(R[j], al, bh0, bh1);
      mma_bf16(R[j], ah, bl0, bl1);
    }
  }
  float acc0 = 0.f, acc1 = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = e >= 2 ? jb : ja, col = 8 * j + 2 * c + (e & 1);
      const float l = decay_lower(F, len, row, col);
      if (e < 2) acc0 += l * R[j][e]; else acc1 += l * R[j][e];
    }
#pragma unroll
  for (int o = 1; o < 4; o <<= 1) {
    acc0 += __shfl_xor_sync(0xffffffffu, acc0, o);
    acc1 += __shfl_xor_sync(0xffffffffu, acc1, o);
  }
  if (c == 0) {
    t3[ja] = acc0;
    t3[jb] = acc1;
  }
}

// gram_and_quadratic on the sm_90a backend (bf16 policy): W = K K^T (m64n64) and Y = K Hbar
// (m64nD) as RS wgmma with K's A fragments from ldmatrix; the same A fragments give the k_i values
// of p_i = sum_d Y_id k_id. K and Hbar must be visible to the async proxy.
template <int D>
GKA_DEVICE inline void gram_and_quadratic_wg(uint32_t sk, uint32_t sh, float* w2, float* p, int warp, int lane) {
  namespace wg = tiling::wg;
  const int r = lane >> 2, c = lane & 3, m0 = 16 * warp;
  uint32_t A[D / 16][4];
  float W[8][4], Y[D / 8][4];
#pragma unroll
  for (int kt = 0; kt < D / 16; ++kt) tiling::load_a<D, kChunkRows>(sk, m0, 16 * kt, lane, A[kt]);
  wg::pin<D / 4>(&A[0][0]);
  wg::fence();
  wg::mma_rs_zero<64, 0>(&W[0][0], A[0], wg::desc_kmajor<kChunkRows>(sk, 0));
#pragma unroll
  for (int kt = 1; kt < D / 16; ++kt) wg::mma_rs<64, 0>(&W[0][0], A[kt], wg::desc_kmajor<kChunkRows>(sk, kt));
  wg::mma_rs_zero<D, 0>(&Y[0][0], A[0], wg::desc_kmajor<D>(sh, 0));
#pragma unroll
  for (int kt = 1; kt < D / 16; ++kt) wg::mma_rs<D, 0>(&Y[0][0], A[kt], wg::desc_kmajor<D>(sh, kt));
  wg::commit();
  wg::wait<0>();
  wg::pin<32>(&W[0][0]);
  wg::pin<D / 2>(&Y[0][0]);
  wg::pin<D / 4>(&A[0][0]);
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = m0 + r + (e >= 2 ? 8 : 0), col = 8 * j + 2 * c + (e & 1);
      w2[row * kPadC + col] = W[j][e] * W[j][e];
    }
  float acc0 = 0.f, acc1 = 0.f;
#pragma unroll
  for (int kt = 0; kt < D / 16; ++kt) {
    // A[kt] = {K[r][16kt+2c..], K[r+8][16kt+2c..], K[r][16kt+8+2c..], K[r+8][16kt+8+2c..]}
    const float* y0 = Y[2 * kt];
    const float* y1 = Y[2 * kt + 1];
    acc0 += y0[0] * tiling::bf16_lo(A[kt][0]) + y0[1] * tiling::bf16_hi(A[kt][0]);
    acc1 += y0[2] * tiling::bf16_lo(A[kt][1]) + y0[3] * tiling::bf16_hi(A[kt][1]);
    acc0 += y1[0] * tiling::bf16_lo(A[kt][2]) + y1[1] * tiling::bf16_hi(A[kt][2]);
    acc1 += y1[2] * tiling::bf16_lo(A[kt][3]) + y1[3] * tiling::bf16_hi(A[kt][3]);
  }
#pragma unroll
  for (int o = 1; o < 4; o <<= 1) {
    acc0 += __shfl_xor_sync(0xffffffffu, acc0, o);
    acc1 += __shfl_xor_sync(0xffffffffu, acc1, o);
  }
  if (c == 0) {
    p[m0 + r] = acc0;
    p[m0 + r + 8] = acc1;
  }
}

}  // namespace solver
GKA_NAMESPACE_END
