// gka/tiling/stage.cuh: global -> shared staging of a chunk's operand tiles (fp32 or bf16 states,
// token tiles) as bf16 hi [+ lo] in the SW128 layout of SwizzledTile.
//
// Why batched: one CTA owns one chunk and only two CTAs share an SM, so a load loop that waits for
// each load before issuing the next leaves the SM idle for one memory latency per iteration. Each
// thread first issues a batch of independent 16-byte loads into registers, then converts and stores.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "gka/config.h"
#include "gka/tiling/mma.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace tiling {

// A fp32 Rows x Cols state (row-major, contiguous) -> bf16 hi [lo] tiles. Returns this thread's
// partial sum of squares (the fp32 values, before rounding).
template <int Rows, int Cols, int kThreads, bool kLo>
GKA_DEVICE inline float stage_state_tile(const float* __restrict__ src, uint8_t* hi, uint8_t* lo, int tid) {
  constexpr int kPer = Rows * Cols / 4 / kThreads;  // float4 per thread
  // 16 loads in flight per thread: two L2 round trips for a 128 x 128 state instead of four.
  constexpr int kBatch = kPer < 16 ? kPer : 16;
  static_assert(kPer % kBatch == 0, "tile size must divide into batches");
  float ss = 0.f;
#pragma unroll 1
  for (int b0 = 0; b0 < kPer; b0 += kBatch) {
    float4 x[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) x[u] = __ldg(reinterpret_cast<const float4*>(src) + tid + (b0 + u) * kThreads);
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = tid + (b0 + u) * kThreads, row = (4 * i) / Cols, col = (4 * i) % Cols;
      ss += x[u].x * x[u].x + x[u].y * x[u].y + x[u].z * x[u].z + x[u].w * x[u].w;
      uint32_t h0, l0, h1, l1;
      split_bf16(x[u].x, x[u].y, h0, l0);
      split_bf16(x[u].z, x[u].w, h1, l1);
      const uint32_t off = SwizzledTile<Cols, Rows>::offset(row, col);
      *reinterpret_cast<uint2*>(hi + off) = make_uint2(h0, h1);
      if (kLo) *reinterpret_cast<uint2*>(lo + off) = make_uint2(l0, l1);
    }
  }
  return ss;
}

// The same from a bf16 state (ForwardArgs::chunk_state_dtype = bf16): hi is the stored value
// itself and lo is exactly zero (written only when kLo, for kernels that read a lo tile). Returns
// the sum of squares of the stored values, so T1 = ||H-bar||^2 matches the operand the solve uses.
template <int Rows, int Cols, int kThreads, bool kLo>
GKA_DEVICE inline float stage_state_tile(const __nv_bfloat16* __restrict__ src, uint8_t* hi, uint8_t* lo, int tid) {
  constexpr int kPer = Rows * Cols / 8 / kThreads;  // 16-byte units (8 elements) per thread
  constexpr int kBatch = kPer < 16 ? kPer : 16;
  static_assert(kPer % kBatch == 0, "tile size must divide into batches");
  float ss = 0.f;
#pragma unroll 1
  for (int b0 = 0; b0 < kPer; b0 += kBatch) {
    uint4 x[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) x[u] = __ldg(reinterpret_cast<const uint4*>(src) + tid + (b0 + u) * kThreads);
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = tid + (b0 + u) * kThreads, row = (8 * i) / Cols, col = (8 * i) % Cols;
      const uint32_t w[4] = {x[u].x, x[u].y, x[u].z, x[u].w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float a = bf16_lo(w[q]), b = bf16_hi(w[q]);
        ss += a * a + b * b;
      }
      const uint32_t off = SwizzledTile<Cols, Rows>::offset(row, col);  // 8 columns stay contiguous
      *reinterpret_cast<uint4*>(hi + off) = x[u];
      if (kLo) *reinterpret_cast<uint4*>(lo + off) = make_uint4(0u, 0u, 0u, 0u);
    }
  }
  return ss;
}

namespace detail {
template <class T, int Rows, int Cols, int kThreads, bool kLo>
GKA_DEVICE inline void stage_token_tile_typed(const TokenTensor& tt, int64_t b, int64_t t0, int64_t head, int len,
                                          const float* scale, uint8_t* hi, uint8_t* lo, int tid) {
  constexpr int kEl = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte unit
  constexpr int kUnitsPerRow = Cols / kEl;
  constexpr int kPer = Rows * kUnitsPerRow / kThreads;
  constexpr int kBatch = kPer < 8 ? kPer : 8;
  static_assert(kPer % kBatch == 0, "tile size must divide into batches");
  const T* base = static_cast<const T*>(tt.data);
#pragma unroll 1
  for (int b0 = 0; b0 < kPer; b0 += kBatch) {
    uint4 raw[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = tid + (b0 + u) * kThreads, t = i / kUnitsPerRow, cu = i % kUnitsPerRow;
      raw[u] = t < len ? __ldg(reinterpret_cast<const uint4*>(base + tt.offset(b, t0 + t, head) + cu * kEl))
                       : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = tid + (b0 + u) * kThreads, t = i / kUnitsPerRow, cu = i % kUnitsPerRow;
      const float s = t < len ? (scale != nullptr ? scale[t] : 1.f) : 0.f;
      const T* e = reinterpret_cast<const T*>(&raw[u]);
      uint32_t vh[kEl / 2], vl[kEl / 2];
#pragma unroll
      for (int q = 0; q < kEl / 2; ++q)
        split_bf16(to_float(e[2 * q]) * s, to_float(e[2 * q + 1]) * s, vh[q], vl[q]);
      const uint32_t off = SwizzledTile<Cols, Rows>::offset(t, cu * kEl);
      if constexpr (kEl == 8) {
        *reinterpret_cast<uint4*>(hi + off) = make_uint4(vh[0], vh[1], vh[2], vh[3]);
        if (kLo) *reinterpret_cast<uint4*>(lo + off) = make_uint4(vl[0], vl[1], vl[2], vl[3]);
      } else {
        *reinterpret_cast<uint2*>(hi + off) = make_uint2(vh[0], vh[1]);
        if (kLo) *reinterpret_cast<uint2*>(lo + off) = make_uint2(vl[0], vl[1]);
      }
    }
  }
}
}  // namespace detail

// The same with the element type known at compile time (T must be tt's dtype).
using detail::stage_token_tile_typed;

// N bf16 token tiles (same token range, one head each) in one batch: all N * Rows * Cols / 8 /
// kThreads 16-byte loads are issued before the first store, so the tiles cost one memory round
// trip, not N. scale[n] == nullptr means 1. Single bf16 only (no lo tile).
template <int N, int Rows, int Cols, int kThreads>
GKA_DEVICE inline void stage_bf16_token_tiles(const TokenTensor* const (&tt)[N], const int64_t (&head)[N], int64_t b,
                                              int64_t t0, int len, const float* const (&scale)[N],
                                              uint8_t* const (&dst)[N], int tid) {
  constexpr int kUnitsPerRow = Cols / 8;
  constexpr int kPer = Rows * kUnitsPerRow / kThreads;
  static_assert(kThreads % kUnitsPerRow == 0, "a thread keeps its 16-byte column across batches");
  constexpr int kRowStep = kThreads / kUnitsPerRow;  // token rows between a thread's loads
  uint4 raw[N][kPer];
#pragma unroll
  for (int n = 0; n < N; ++n) {
    // one row address per tile, then a stride: cheap address code (the prologue is fetch bound)
    const int t_first = tid / kUnitsPerRow, cu = tid % kUnitsPerRow;
    const __nv_bfloat16* src = static_cast<const __nv_bfloat16*>(tt[n]->data) +
                               tt[n]->offset(b, t0 + t_first, head[n]) + cu * 8;
    const int64_t step = kRowStep * tt[n]->stride_token;
#pragma unroll
    for (int u = 0; u < kPer; ++u)
      raw[n][u] = t_first + u * kRowStep < len ? __ldg(reinterpret_cast<const uint4*>(src + u * step))
                                               : make_uint4(0u, 0u, 0u, 0u);
  }
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int i = tid + u * kThreads, t = i / kUnitsPerRow, cu = i % kUnitsPerRow;
      const uint32_t off = SwizzledTile<Cols, Rows>::offset(t, cu * 8);
      if (scale[n] == nullptr) {  // raw copy: exact
        *reinterpret_cast<uint4*>(dst[n] + off) = raw[n][u];
        continue;
      }
      const float s = t < len ? scale[n][t] : 0.f;
      const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&raw[n][u]);
      uint32_t vh[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) vh[q] = pack_bf16(__bfloat162float(e[2 * q]) * s, __bfloat162float(e[2 * q + 1]) * s);
      *reinterpret_cast<uint4*>(dst[n] + off) = make_uint4(vh[0], vh[1], vh[2], vh[3]);
    }
}

// Rows tokens (t0 + 0 .. len-1 valid, the rest zero) x Cols of a token tensor, each token scaled by
// scale[t] -> bf16 hi [lo]. Token vectors are 16-byte aligned (host validation).
template <int Rows, int Cols, int kThreads, bool kLo>
GKA_DEVICE inline void stage_token_tile(const TokenTensor& tt, int64_t b, int64_t t0, int64_t head, int len,
                                        const float* scale, uint8_t* hi, uint8_t* lo, int tid) {
  switch (tt.dtype) {
    case DType::kBF16:
      detail::stage_token_tile_typed<__nv_bfloat16, Rows, Cols, kThreads, kLo>(tt, b, t0, head, len, scale, hi, lo, tid);
      break;
    case DType::kFP16:
      detail::stage_token_tile_typed<__half, Rows, Cols, kThreads, kLo>(tt, b, t0, head, len, scale, hi, lo, tid);
      break;
    default:
      detail::stage_token_tile_typed<float, Rows, Cols, kThreads, kLo>(tt, b, t0, head, len, scale, hi, lo, tid);
      break;
  }
}

}  // namespace tiling
GKA_NAMESPACE_END
