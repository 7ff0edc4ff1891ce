// gka/tiling/warp_gemm.cuh: one warp's 16-row slice of a product of two shared-memory tiles (or of
// a register A fragment and a tile), on mma.sync with fp32 accumulation. The backward's
// chunk-parallel kernels are sequences of these.
//
// Operands are bf16 SW128 tiles (tiling::SwizzledTile, staged by tiling/stage.cuh), optionally with
// a lo tile holding bf16(x - hi): the product is hi*hi + lo_a*hi_b + hi_a*lo_b, each lo term only
// where that operand has a lo part (about 16 significant bits per operand; lo*lo is below that).
//
//   gemm_nk2: acc[NT][4] += A[m0 .. m0+16)[0 .. K) * B[n0 .. n0+8NT)[0 .. K)^T   (B stored [N][K])
//   gemm_kn2: acc[NT][4] += A[m0 .. m0+16)[0 .. K) * B[0 .. K)[n0 .. n0+8NT)     (B stored [K][N])
//   gemm_rkn2: the same as gemm_kn2 with A given as register fragments (e.g. a masked score tile).
//   *_kpiece: one k-range of the above against a B that holds only that range (a staged piece).
// Tile template arguments follow SwizzledTile<Cols, Rows>: A is <ACols = K, ARows>, B is
// <BCols, BRows> as stored. Accumulator layout: tiling/mma.cuh.
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/tiling/mma.cuh"

GKA_NAMESPACE_BEGIN
namespace tiling {

// Operand addresses (shared-state-space) of a tile and, with kLo, its lo part.
struct SplitTile {
  uint32_t hi = 0, lo = 0;
};

template <int NT>
GKA_DEVICE inline void zero_acc(float (&acc)[NT][4]) {
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
}

// ---- per-operand lo flags (bf16-exact operands have a zero lo part: neither staged nor multiplied)
// The product is hi*hi + [kALo] lo_a*hi_b + [kBLo] hi_a*lo_b in that order, so where a dropped lo
// part is exactly zero the result is bitwise the same. np_begin / kt_begin (runtime, warp-uniform)
// skip n16 column pairs / k16 steps known to be masked to zero (causal score tiles): their
// accumulators are left untouched.

// A k-piece of gemm_nk2: the k-steps [ak0, ak0 + KP) of A (a full <ACols, ARows> tile) against B,
// a <BCols = KP, BRows> tile that holds only those k columns of the operand (a piece of a larger
// operand staged on its own, e.g. a 64 x 64 block of a D x D state). Running the pieces over
// ak0 = 0, KP, .. into the same accumulators gives bitwise gemm_nk2's result over the whole K.
template <int KP, int ACols, int ARows, int BCols, int BRows, int NT, bool kALo, bool kBLo>
GKA_DEVICE inline void gemm_nk2_kpiece(float (&acc)[NT][4], SplitTile a, SplitTile b, int m0, int ak0, int n0,
                                       int lane, int np_begin = 0) {
  static_assert(NT % 2 == 0, "n8 tiles come in pairs");
  static_assert(BCols == KP, "B holds exactly the piece's k columns");
#pragma unroll
  for (int kt = 0; kt < KP / 16; ++kt) {
    uint32_t ah[4], al[4];
    load_a<ACols, ARows>(a.hi, m0, ak0 + 16 * kt, lane, ah);
    if constexpr (kALo) load_a<ACols, ARows>(a.lo, m0, ak0 + 16 * kt, lane, al);
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      if (np < np_begin) continue;
      uint32_t bh[4];
      load_b_nk<BCols, BRows>(b.hi, n0 + 16 * np, 16 * kt, lane, bh);
      mma_bf16(acc[2 * np], ah, bh[0], bh[1]);
      mma_bf16(acc[2 * np + 1], ah, bh[2], bh[3]);
      if constexpr (kALo) {
        mma_bf16(acc[2 * np], al, bh[0], bh[1]);
        mma_bf16(acc[2 * np + 1], al, bh[2], bh[3]);
      }
      if constexpr (kBLo) {
        uint32_t bl[4];
        load_b_nk<BCols, BRows>(b.lo, n0 + 16 * np, 16 * kt, lane, bl);
        mma_bf16(acc[2 * np], ah, bl[0], bl[1]);
        mma_bf16(acc[2 * np + 1], ah, bl[2], bl[3]);
      }
    }
  }
}

// The whole K: one piece that is the full tile.
template <int K, int ARows, int BCols, int BRows, int NT, bool kALo, bool kBLo>
GKA_DEVICE inline void gemm_nk2(float (&acc)[NT][4], SplitTile a, SplitTile b, int m0, int n0, int lane,
                                int np_begin = 0) {
  gemm_nk2_kpiece<K, K, ARows, BCols, BRows, NT, kALo, kBLo>(acc, a, b, m0, 0, n0, lane, np_begin);
}

template <int K, int BCols, int BRows, int NT, bool kALo, bool kBLo>
GKA_DEVICE inline void gemm_rkn2(float (&acc)[NT][4], const uint32_t (&ah)[K / 16][4], const uint32_t (&al)[K / 16][4],
                                 SplitTile b, int n0, int lane, int kt_begin = 0) {
  static_assert(NT % 2 == 0, "n8 tiles come in pairs");
#pragma unroll
  for (int kt = 0; kt < K / 16; ++kt) {
    if (kt < kt_begin) continue;
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t bh[4];
      load_b_kn<BCols, BRows>(b.hi, n0 + 16 * np, 16 * kt, lane, bh);
      mma_bf16(acc[2 * np], ah[kt], bh[0], bh[1]);
      mma_bf16(acc[2 * np + 1], ah[kt], bh[2], bh[3]);
      if constexpr (kALo) {
        mma_bf16(acc[2 * np], al[kt], bh[0], bh[1]);
        mma_bf16(acc[2 * np + 1], al[kt], bh[2], bh[3]);
      }
      if constexpr (kBLo) {
        uint32_t bl[4];
        load_b_kn<BCols, BRows>(b.lo, n0 + 16 * np, 16 * kt, lane, bl);
        mma_bf16(acc[2 * np], ah[kt], bl[0], bl[1]);
        mma_bf16(acc[2 * np + 1], ah[kt], bl[2], bl[3]);
      }
    }
  }
}

template <int K, int ARows, int BCols, int BRows, int NT, bool kALo, bool kBLo>
GKA_DEVICE inline void gemm_kn2(float (&acc)[NT][4], SplitTile a, SplitTile b, int m0, int n0, int lane) {
  uint32_t ah[K / 16][4], al[K / 16][4];
#pragma unroll
  for (int kt = 0; kt < K / 16; ++kt) {
    load_a<K, ARows>(a.hi, m0, 16 * kt, lane, ah[kt]);
    if constexpr (kALo) load_a<K, ARows>(a.lo, m0, 16 * kt, lane, al[kt]);
  }
  gemm_rkn2<K, BCols, BRows, NT, kALo, kBLo>(acc, ah, al, b, n0, lane);
}

// The same for gemm_kn2: A's k-steps [ak0, ak0 + KP) against B, a <BCols, BRows = KP> tile that
// holds only those k rows of the operand (stored [K][N]). Pieces over ak0 = 0, KP, .. into the same
// accumulators give bitwise gemm_kn2's result over the whole K.
template <int KP, int ACols, int ARows, int BCols, int BRows, int NT, bool kALo, bool kBLo>
GKA_DEVICE inline void gemm_kn2_kpiece(float (&acc)[NT][4], SplitTile a, SplitTile b, int m0, int ak0, int n0,
                                       int lane) {
  static_assert(BRows == KP, "B holds exactly the piece's k rows");
  uint32_t ah[KP / 16][4], al[KP / 16][4];
#pragma unroll
  for (int kt = 0; kt < KP / 16; ++kt) {
    load_a<ACols, ARows>(a.hi, m0, ak0 + 16 * kt, lane, ah[kt]);
    if constexpr (kALo) load_a<ACols, ARows>(a.lo, m0, ak0 + 16 * kt, lane, al[kt]);
  }
  gemm_rkn2<KP, BCols, BRows, NT, kALo, kBLo>(acc, ah, al, b, n0, lane);
}

// A score tile held in accumulators (16 x K, K/8 n8 tiles) -> A fragments of K/16 k-steps, split.
template <int K>
GKA_DEVICE inline void acc_to_a_split_all(const float (&s)[K / 8][4], uint32_t (&ah)[K / 16][4],
                                          uint32_t (&al)[K / 16][4]) {
#pragma unroll
  for (int kt = 0; kt < K / 16; ++kt) acc_to_a_split(s[2 * kt], s[2 * kt + 1], ah[kt], al[kt]);
}

// The (row, column) of accumulator element e of n8 tile j for this lane, relative to (m0, n0).
GKA_DEVICE inline int acc_row(int lane, int e) { return (lane >> 2) + (e >= 2 ? 8 : 0); }
GKA_DEVICE inline int acc_col(int lane, int j, int e) { return 8 * j + 2 * (lane & 3) + (e & 1); }

}  // namespace tiling
GKA_NAMESPACE_END
