// gka/tiling/state_scan.cuh: the gated outer-product chunk-state update (spec 3.2), one primitive
// for the covariance H (keys = values = k, decay f) and the GLA state S (keys k, values v, decay g):
//
//   state <- exp(F_last) * state + sum_t exp(F_last - F_t) * key_t value_t^T
//
// One warp owns a 16-row x (8 * NT)-column slice of the fp32 state in mma accumulator layout. The
// decayed keys are formed in fp32 and split into bf16 hi + lo (about 16 significant bits); values
// are bf16-exact (single policy) or split as well (split policy, for fp16/fp32 inputs).
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "gka/config.h"
#include "gka/tiling/mma.cuh"

GKA_NAMESPACE_BEGIN
namespace tiling {

// A raw token tile in shared memory: row t (token) is `pitch` bytes, elements of type Tin.
template <class Tin>
struct RawTile {
  const uint8_t* base;
  int pitch;
  GKA_DEVICE float at(int t, int col) const {
    return to_float(*reinterpret_cast<const Tin*>(base + t * pitch + col * static_cast<int>(sizeof(Tin))));
  }
};

// Value of a (possibly transformed) token element as every kernel must see it: with the single
// policy a transformed value is rounded to bf16 so the scan, the norm and the solve all use the same
// operand; with the split policy it stays fp32 and is split into hi + lo where it enters an MMA.
template <bool kSplit>
GKA_DEVICE inline float operand_value(float raw, float scale) {
  const float x = raw * scale;
  return kSplit ? x : round_bf16(x);
}

template <class Tin, int NT, bool kSplit>
GKA_DEVICE inline void state_chunk_update(float (&acc)[NT][4], float chunk_decay, const RawTile<Tin>& keys,
                                          const RawTile<Tin>& vals, const float* key_decay,
                                          const float* key_scale, const float* val_scale, int row0, int col0, int lane) {
  const int r = lane >> 2, c = lane & 3;
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] *= chunk_decay;
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    const int t0 = 16 * kt + 2 * c;
    // A[m = key dim][k = token] = exp(F_last - F_t) * key_t[dim]
    float av[8];
    const int ts[4] = {t0, t0 + 1, t0 + 8, t0 + 9};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int t = ts[q];
      const float kd = key_decay[t], ks = key_scale[t];
      av[q * 2 + 0] = kd * operand_value<kSplit>(keys.at(t, row0 + r), ks);      // row r
      av[q * 2 + 1] = kd * operand_value<kSplit>(keys.at(t, row0 + r + 8), ks);  // row r + 8
    }
    uint32_t ahi[4], alo[4];
    split_bf16(av[0], av[2], ahi[0], alo[0]);  // (r, t0), (r, t0+1)
    split_bf16(av[1], av[3], ahi[1], alo[1]);  // (r+8, t0..)
    split_bf16(av[4], av[6], ahi[2], alo[2]);  // (r, t0+8..)
    split_bf16(av[5], av[7], ahi[3], alo[3]);  // (r+8, t0+8..)
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int col = col0 + 8 * j + r;
      const float b0 = operand_value<kSplit>(vals.at(t0, col), val_scale[t0]);
      const float b1 = operand_value<kSplit>(vals.at(t0 + 1, col), val_scale[t0 + 1]);
      const float b2 = operand_value<kSplit>(vals.at(t0 + 8, col), val_scale[t0 + 8]);
      const float b3 = operand_value<kSplit>(vals.at(t0 + 9, col), val_scale[t0 + 9]);
      if constexpr (kSplit) {
        uint32_t bh0, bl0, bh1, bl1;
        split_bf16(b0, b1, bh0, bl0);
        split_bf16(b2, b3, bh1, bl1);
        mma_bf16(acc[j], ahi, bh0, bh1);
        mma_bf16(acc[j], alo, bh0, bh1);
        mma_bf16(acc[j], ahi, bl0, bl1);
      } else {
        const uint32_t bh0 = pack_bf16(b0, b1), bh1 = pack_bf16(b2, b3);
        mma_bf16(acc[j], ahi, bh0, bh1);
        mma_bf16(acc[j], alo, bh0, bh1);
      }
    }
  }
}

}  // namespace tiling
GKA_NAMESPACE_END
