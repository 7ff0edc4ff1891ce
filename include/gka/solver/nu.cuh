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

// t3[j] = sum_l L_jl (L W2)_jl for the warp's 16 rows; L, W2 fp32 [C][kPadC].
GKA_DEVICE inline void intra_norm_sq(const float* L, const float* w2, float* t3, int warp, int lane) {
  using namespace tiling;
  const int r = lane >> 2, c = lane & 3, m0 = 16 * warp;
  float R[8][4] = {};
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    if (kt > warp) continue;  // L is lower triangular
    const int k0 = 16 * kt + 2 * c;
    uint32_t ah[4], al[4];
    split_bf16(L[(m0 + r) * kPadC + k0], L[(m0 + r) * kPadC + k0 + 1], ah[0], al[0]);
    split_bf16(L[(m0 + r + 8) * kPadC + k0], L[(m0 + r + 8) * kPadC + k0 + 1], ah[1], al[1]);
    split_bf16(L[(m0 + r) * kPadC + k0 + 8], L[(m0 + r) * kPadC + k0 + 9], ah[2], al[2]);
    split_bf16(L[(m0 + r + 8) * kPadC + k0 + 8], L[(m0 + r + 8) * kPadC + k0 + 9], ah[3], al[3]);
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
      const int row = m0 + r + (e >= 2 ? 8 : 0), col = 8 * j + 2 * c + (e & 1);
      const float l = L[row * kPadC + col];
      if (e < 2) acc0 += l * R[j][e]; else acc1 += l * R[j][e];
    }
#pragma unroll
  for (int o = 1; o < 4; o <<= 1) {
    acc0 += __shfl_xor_sync(0xffffffffu, acc0, o);
    acc1 += __shfl_xor_sync(0xffffffffu, acc1, o);
  }
  if (c == 0) {
    t3[m0 + r] = acc0;
    t3[m0 + r + 8] = acc1;
  }
}

}  // namespace solver
GKA_NAMESPACE_END
