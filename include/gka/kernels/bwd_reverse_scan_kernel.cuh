// gka/kernels/bwd_reverse_scan_kernel.cuh: the backward's three reverse chunk-state scans (spec 4.2
// step 2, 4.6 Passes C and E), in the organisation of the forward's state_scan_mma_kernel run from
// the last chunk to the first:
//
//   role 0  R-bar: state <- e^{F_end} state + sum_j e^{F_j} z_j x_j^T            (start -dH_T)
//   role 1  S^:    state <- e^{G_end} state + sum_j s e^{G_j} q~_j do_j^T        (start dS_T)
//   role 2  B~:    state <- e^{F_end} state + c_n H-bar_n + sum_j b_j k_j k_j^T  (start 0; bp_lambda)
//          with b_j = sum_{i>=j} e^{F_i - F_j} e^{F_i} w_i and c_n = sum_j e^{2 F_j} w_j (Pi_n of
//          Pass E, read from H-bar_n instead of being materialised).
//
// Before chunk n's update the state ("after chunk n") goes to the role's per-chunk array at the
// chunk's index; after the loop the state goes to the per-sequence array. Every exponent is a
// difference of chunk-local cumsums or a cumsum itself (<= 0, spec 8). The weighted keys enter the
// MMA as bf16 hi + lo, the values as bf16 hi + lo when they are not bf16 (fp32 z / x / q~, fp16)
// and as the raw bf16 rows otherwise (lo = 0: the hi*lo product is skipped, which changes nothing);
// the state stays fp32 in accumulators: the scans are accurate to ~1e-5 relative. Deterministic.
// The bf16 plan (TWs = bf16: the per-chunk states are stored in bf16, 2^-9) multiplies the hi parts
// only: the operands' rounding (2^-9 each) is then of the size of the states' own, and the scan
// takes 2 / 3 (role 0) or 1 / 2 (roles 1, 2) of the products. H200, tests/gpu/test_backward.cu: the
// gradients' errors move by <= 15 % (docs/gpu-backward.md); rscan 1.97 -> 1.79 ms at T = 2048.
//
// Segmented (p.seg.count > 1, kernels/backward_params.cuh: ScanSegments): a CTA scans one run of its
// sequence's chunks from zero (the last run from -dH_T / dS_T), writes the per-chunk decay from the
// run's end (roles 0, 1) and ends with the run's total instead of the per-sequence state;
// bwd_scan_carry_kernel below then forms the carries and the per-sequence states.
//
// Grid: (num_seqs * segments * H_q, 3 roles or p.rscan_roles' subset, D / 64 row tiles).
// Block: 256 threads; warp w owns state rows 16 (w % 4).. of the 64-row tile and columns (w / 4) * D/2 ...
//
// Organisation (why; measured on H200, see tests/gpu/test_bwd_perf_rscan.cu). The previous version
// converted whole rows to fp32 tiles and built every MMA fragment from scalars in every warp, formed
// b_j with an O(C^2) loop in one warp and needed 199 KiB of shared memory at D = 128 (one CTA per
// SM: the B = 2 grid of 192 CTAs ran in two waves). Now, per chunk:
//  * the raw rows arrive by cp.async into a two-stage buffer (chunk n - 1 loads during chunk n);
//    only this CTA's 64 key columns are loaded;
//  * operands are prepared once per CTA, cooperatively and in place: an fp32 row of 8 elements
//    (32 bytes) becomes its bf16 hi (16 bytes) followed by its lo (16 bytes) in the same 32 bytes,
//    keys already multiplied by their weight; bf16 values are used as loaded. So one stage holds
//    both the raw rows and the operands: 2 x 50 KiB = 100 KiB at D = 128 (two CTAs per SM on
//    H100/H200; fits sm_80's 163 KiB);
//  * every MMA operand is one ldmatrix.trans (A = keys^T from the [token][row] tile, B = values from
//    the [token][col] tile), 2 or 3 products per k-step as in state_scan_kernel's split path, in the
//    same order, with the same element values; role 2 adds c_n H-bar_n to the decayed state before
//    the chunk's products (its H-bar registers are then dead during the MMA: no spills);
//  * the chunk's weights (cumsum, e^{F}, b_j, its decay and c_n) come ready-made from
//    bwd_scan_weights_kernel (below; they are chunk-local) in one 272-byte row loaded with the
//    stage. Forming them in warp 0 during the chunk before (the earlier organisation) kept the
//    other warps waiting at the barrier: ~1 us of each chunk's ~4 us step on one CTA's chain;
//  * states leave in 16-byte streaming stores (a quad shuffle turns the fragment layout into 64
//    contiguous bytes per row) with no shared-memory staging; role 2 reads H-bar_n from the stage
//    (bf16 k and bf16 H-bar: the rows ride in the value rows' unused tail) or else from L2
//    (prefetched one chunk ahead), before the update. Either the weights in warp 0 or the H-bar
//    reads from L2 cost the scans ~0.4 ms of 2.64 at T = 32768 (H200, bf16 plan; one-off timing
//    harness with parts of the loop switched off, 2026-11-29; not in the repository).
//
// Measured (H200, D = 128, 65,536 tokens x 16 heads, bf16 k / do, fp32 z / q~ / x, fp32 states,
// bp_lambda on; test_bwd_perf_rscan): T = 2048 / 8192 / 32768: 2.19 / 2.25 / 2.94 ms at a64f465
// (2.37 / 2.52 / 3.18 before the weights pass; 7.49 / 7.47 / 10.68 before this organisation).
// About 7.4 GB move per launch (3.2 GB of fp32 per-chunk states out; each of the two row-tile CTAs
// reads the full value rows; H-bar in): ~3.4 TB/s at T = 2048, bandwidth-bound. At T = 32768
// (B = 2: 192 CTAs) each CTA's chain through 512 chunks bounds it, not the CTA count: 64 x 64 state
// tiles at 3 CTAs per SM (384 CTAs) measured 3.02 against 3.21 ms there and were slower at T = 2048
// (2.87 against 2.37); docs/gpu-backward.md has the segment-parallel scan.
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/kernels/backward_params.cuh"
#include "gka/tiling/chunks.cuh"
#include "gka/tiling/copy.cuh"
#include "gka/tiling/mma.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

constexpr int kRscanThreads = 256;
constexpr int kRscanChunk = 64;
// A chunk's weights row in BackwardWorkspace::scan_wts ([chunk_bound][H_q][3 roles] rows, written by
// bwd_scan_weights_kernel): the 64 per-token key weights, the chunk's decay e^{F_end}, c_n (role
// 2), and 2 floats of padding so that a row is 17 whole 16-byte cp.async pieces.
constexpr int kRscanWts = kRscanChunk + 4;
constexpr int kScanWeightsThreads = 96;  // one warp per role

template <int D>
struct RscanSmem {
  // keys: 64 columns (this CTA's state rows) of 64 tokens; values: D columns. Rows are sized for
  // fp32 (any dtype is loaded at the row start) and padded 16 B: conflict-free ldmatrix.
  static constexpr int kKeyPitch = 64 * 4 + 16;
  static constexpr int kValPitch = D * 4 + 16;
  static constexpr int kKeyTile = kRscanChunk * kKeyPitch;
  static constexpr int kValTile = kRscanChunk * kValPitch;
  static constexpr int kStage = kKeyTile + kValTile;  // [keys, values]
  static constexpr int kScalars = 2 * kStage;
  // the chunk's weights row (kRscanWts floats: weights, decay, c_n) per stage
  static constexpr int kBytes = kScalars + 2 * kRscanWts * 4;
  static constexpr int kMinBlocks = 2;
};

namespace rscan {

// 8 consecutive elements of a raw row (fp32, bf16 or fp16) as fp32.
GKA_DEVICE inline void load8(const uint8_t* p, DType t, float (&x)[8]) {
  if (t == DType::kFP32) {
    const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 16);
    x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w; x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
  } else {
    const uint4 w = *reinterpret_cast<const uint4*>(p);
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (t == DType::kBF16) {
        x[2 * q] = tiling::bf16_lo(u[q]);
        x[2 * q + 1] = tiling::bf16_hi(u[q]);
      } else {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&u[q]));
        x[2 * q] = f.x;
        x[2 * q + 1] = f.y;
      }
    }
  }
}
GKA_DEVICE inline void raw8_to_float(const uint4& w, DType t, float (&x)[8]) {
  load8(reinterpret_cast<const uint8_t*>(&w), t, x);
}
// s * x[0..8) split into bf16 hi (dst) and lo (dst + 16; not stored without kLo).
template <bool kLo = true>
GKA_DEVICE inline void store_split8(uint8_t* dst, const float (&x)[8], float s) {
  uint32_t hi[4], lo[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) tiling::split_bf16(s * x[2 * q], s * x[2 * q + 1], hi[q], lo[q]);
  *reinterpret_cast<uint4*>(dst) = make_uint4(hi[0], hi[1], hi[2], hi[3]);
  if (kLo) *reinterpret_cast<uint4*>(dst + 16) = make_uint4(lo[0], lo[1], lo[2], lo[3]);
}

// A 64-token tile of `cols` columns loaded at the start of `pitch`-byte rows (dtype t) -> in place,
// per 8 columns: bf16 hi (16 B) then lo (16 B), row t scaled by scale[t] (nullptr: 1). fp32 rows
// are converted item by item (a thread rewrites exactly the 32 bytes it read); 16-bit rows grow, so
// every thread reads its items first and the block synchronises before the writes (uniform branch).
template <int kCols, bool kLo = true>
GKA_DEVICE inline void split_in_place(uint8_t* tile, int pitch, DType t, const float* scale, int tid) {
  constexpr int kItems = kRscanChunk * kCols / 8 / kRscanThreads;
  static_assert(kItems * kRscanThreads * 8 == kRscanChunk * kCols, "items per thread");
  if (t == DType::kFP32) {
#pragma unroll 1
    for (int u = 0; u < kItems; ++u) {
      const int i = tid + u * kRscanThreads, row = i / (kCols / 8), g = i % (kCols / 8);
      uint8_t* p = tile + row * pitch + g * 32;
      float x[8];
      load8(p, t, x);
      store_split8<kLo>(p, x, scale ? scale[row] : 1.f);
    }
  } else {
    uint4 raw[kItems];
#pragma unroll
    for (int u = 0; u < kItems; ++u) {
      const int i = tid + u * kRscanThreads, row = i / (kCols / 8), g = i % (kCols / 8);
      raw[u] = *reinterpret_cast<const uint4*>(tile + row * pitch + g * 16);
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kItems; ++u) {
      const int i = tid + u * kRscanThreads, row = i / (kCols / 8), g = i % (kCols / 8);
      float x[8];
      raw8_to_float(raw[u], t, x);
      store_split8<kLo>(tile + row * pitch + g * 32, x, scale ? scale[row] : 1.f);
    }
  }
}

// This thread's accumulator fragment -> a row-major fp32 (or bf16) D x D state, 16-byte (8-byte) streaming stores: lanes
// c and c ^ 1 of a quad swap one float2 so that the quad holds 16 contiguous columns of its row.
template <int D, int NT, class TOut>
GKA_DEVICE inline void store_state(TOut* out, const float (&acc)[NT][4], int row0, int col0, int lane) {
  const int r = lane >> 2, c = lane & 3;
  const bool odd = c & 1;
#pragma unroll
  for (int jj = 0; jj < NT / 2; ++jj)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float p0x = acc[2 * jj][2 * h], p0y = acc[2 * jj][2 * h + 1];
      const float p1x = acc[2 * jj + 1][2 * h], p1y = acc[2 * jj + 1][2 * h + 1];
      const float rx = __shfl_xor_sync(0xffffffffu, odd ? p0x : p1x, 1);
      const float ry = __shfl_xor_sync(0xffffffffu, odd ? p0y : p1y, 1);
      const float4 v = odd ? make_float4(rx, ry, p1x, p1y) : make_float4(p0x, p0y, rx, ry);
      const int col = col0 + 16 * jj + (odd ? 8 + 2 * (c - 1) : 2 * c);
      TOut* dst = out + static_cast<int64_t>(row0 + r + 8 * h) * D + col;
      if constexpr (sizeof(TOut) == 4) __stcs(reinterpret_cast<float4*>(dst), v);
      else __stcs(reinterpret_cast<uint2*>(dst), make_uint2(tiling::pack_bf16(v.x, v.y), tiling::pack_bf16(v.z, v.w)));
    }
}

// acc += A B for one chunk: A[m][k] = weighted keys (rows m0.. of the tile, tokens k) from the
// [token][row] hi|lo tile at k_base (pitch KP), B[k][n] = values (columns col0..) from the tile at
// v_base (pitch VP): raw bf16 rows (kRaw) or hi|lo per 8 columns. Products in state_chunk_update's
// order: hi*hi, lo*hi [, hi*lo].
template <int NT, int KP, int VP, bool kRaw, bool kLo = true>
GKA_DEVICE inline void chunk_products(float (&acc)[NT][4], uint32_t k_base, uint32_t v_base, int m0, int col0,
                                      int lane) {
  const int li = lane >> 3, lr = lane & 7;
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    // A from the [token][row] tile: matrices (k0, m0), (k0, m0+8), (k0+8, m0), (k0+8, m0+8)
    const uint32_t a_off = (16 * kt + lr + (li >> 1) * 8) * KP + (m0 / 8 + (li & 1)) * 32;
    uint32_t ahi[4], alo[4];
    tiling::ldmatrix_x4_trans(k_base + a_off, ahi[0], ahi[1], ahi[2], ahi[3]);
    if (kLo) tiling::ldmatrix_x4_trans(k_base + a_off + 16, alo[0], alo[1], alo[2], alo[3]);
    const int bt = 16 * kt + lr + (li & 1) * 8;
#pragma unroll
    for (int jj = 0; jj < NT / 2; ++jj) {
      // B for n8 tiles 2jj, 2jj+1: matrices (k0, n0), (k0+8, n0), (k0, n0+8), (k0+8, n0+8)
      const int n8 = col0 + 16 * jj + (li >> 1) * 8;
      uint32_t b[4];
      if constexpr (kRaw) {
        tiling::ldmatrix_x4_trans(v_base + bt * VP + 2 * n8, b[0], b[1], b[2], b[3]);
        tiling::mma_bf16(acc[2 * jj], ahi, b[0], b[1]);
        if (kLo) tiling::mma_bf16(acc[2 * jj], alo, b[0], b[1]);
        tiling::mma_bf16(acc[2 * jj + 1], ahi, b[2], b[3]);
        if (kLo) tiling::mma_bf16(acc[2 * jj + 1], alo, b[2], b[3]);
      } else {
        uint32_t bl[4];
        const uint32_t b_off = bt * VP + (n8 / 8) * 32;
        tiling::ldmatrix_x4_trans(v_base + b_off, b[0], b[1], b[2], b[3]);
        if (kLo) tiling::ldmatrix_x4_trans(v_base + b_off + 16, bl[0], bl[1], bl[2], bl[3]);
        tiling::mma_bf16(acc[2 * jj], ahi, b[0], b[1]);
        if (kLo) tiling::mma_bf16(acc[2 * jj], alo, b[0], b[1]);
        if (kLo) tiling::mma_bf16(acc[2 * jj], ahi, bl[0], bl[1]);
        tiling::mma_bf16(acc[2 * jj + 1], ahi, b[2], b[3]);
        if (kLo) tiling::mma_bf16(acc[2 * jj + 1], alo, b[2], b[3]);
        if (kLo) tiling::mma_bf16(acc[2 * jj + 1], ahi, bl[2], bl[3]);
      }
    }
  }
}

}  // namespace rscan

// TState: the forward's chunk states (H-bar, read by the B~ role); TWs: the per-chunk states this
// kernel writes (ws.r_end / s_end / b_end: fp32, or bf16 with bf16 forward states).
template <int D, class TState, class TWs = float>
__global__ void __launch_bounds__(kRscanThreads, RscanSmem<D>::kMinBlocks) bwd_reverse_scan_kernel(BackwardParams p) {
  using Smem = RscanSmem<D>;
  constexpr int NT = D / 16;  // n8 tiles per warp (D/2 columns)
  // the bf16 plan (bf16 per-chunk states): operands as bf16 hi only, no lo products (see the header)
  constexpr bool kLo = sizeof(TWs) == 4;
  constexpr int C = kRscanChunk;
  constexpr int KP = Smem::kKeyPitch, VP = Smem::kValPitch;
  static_assert(NT % 2 == 0, "B fragments are loaded two n8 tiles at a time");
  const int role = p.rscan_roles == kRscanSHat ? 1 : p.rscan_roles == kRscanCov ? 2 * blockIdx.y : blockIdx.y;
  if (role == 2 && !p.bp_lambda) return;
  extern __shared__ __align__(128) uint8_t smem[];
  float* wts = reinterpret_cast<float*>(smem + Smem::kScalars);  // [2 stages][kRscanWts]: the chunk's weights row

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, r = lane >> 2, c = lane & 3;
  const int64_t run = blockIdx.x / p.heads_q % p.seg.count, seq = blockIdx.x / p.heads_q / p.seg.count;
  const int64_t h = blockIdx.x % p.heads_q, hk = h / p.group;
  const tiling::SeqEntry se = p.geo.sequence(seq);
  const int64_t nchunks = (se.len + C - 1) / C;
  const bool segmented = p.seg.count > 1;
  // this CTA's chunks: [c_begin, c_end), the whole sequence unless segmented
  const int c_begin = static_cast<int>(run * p.seg.length(nchunks));
  const int c_end = static_cast<int>(c_begin + p.seg.length(nchunks) < nchunks ? c_begin + p.seg.length(nchunks) : nchunks);
  if (segmented && c_begin >= c_end) return;  // a run past a short sequence's end
  const int tile_row0 = blockIdx.z * 64;
  const int m0 = 16 * (warp & 3);  // first row of this warp inside the tile
  const int row0 = tile_row0 + m0;
  const int col0 = (warp >> 2) * (D / 2);

  const TokenTensor keys_t = role == 0 ? p.ws.z : role == 1 ? p.ws.qmix : p.k;
  const TokenTensor vals_t = role == 0 ? p.x : role == 1 ? p.d_o : p.k;
  const bool same = role == 2;  // keys are the values: only the value rows are loaded
  const bool vals_raw = vals_t.dtype == DType::kBF16;  // values enter the MMA as loaded
  const int64_t head = role == 2 ? hk : h;
  TWs* per_chunk = static_cast<TWs*>(role == 0 ? p.ws.r_end : role == 1 ? p.ws.s_end : p.ws.b_end);
  float* per_seq = role == 0 ? p.ws.r_first : role == 1 ? p.ws.s_first : p.ws.b_total;
  const int kbytes = dtype_size(keys_t.dtype), vbytes = dtype_size(vals_t.dtype);
  const uint8_t* kbase = static_cast<const uint8_t*>(keys_t.data) + keys_t.offset(se.b, se.t0, head) * kbytes;
  const uint8_t* vbase = static_cast<const uint8_t*>(vals_t.data) + vals_t.offset(se.b, se.t0, head) * vbytes;
  const int64_t kstride = keys_t.stride_token * kbytes, vstride = vals_t.stride_token * vbytes;
  // H-bar_n (role 2's dense add) rides with the stage, in the tail of the value rows, when those hold
  // raw bf16 keys (k in bf16: D * 2 of the D * 4 bytes) and H-bar is bf16 (D * 2 bytes a row); else
  // every thread reads its fragment from L2 (prefetched a chunk ahead) after the operands are ready.
  const bool hbar_staged = role == 2 && sizeof(TState) == 2 && vals_raw;
  const float* wts_src = p.ws.scan_wts + (h * 3 + role) * kRscanWts;  // + chunk * H_q * 3 * kRscanWts
  auto chunk_valid = [&](int64_t n) { return static_cast<int>(se.len - n * C < C ? se.len - n * C : C); };

  // initial state: -dH_T (R-bar is pre-negated), dS_T, or 0 (and 0 for every run but the last)
  float acc[NT][4];
  {
    const StateTensor init = c_end < nchunks ? StateTensor{} : role == 0 ? p.d_ht : role == 1 ? p.d_st : StateTensor{};
    const float sign = role == 0 ? -1.f : 1.f;
    const float* src = init.data != nullptr ? static_cast<const float*>(init.data) + init.offset(seq, h) : nullptr;
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row0 + r + (e >= 2 ? 8 : 0), col = col0 + 8 * j + 2 * c + (e & 1);
        acc[j][e] = src != nullptr ? sign * src[row * init.stride_row + col] : 0.f;
      }
  }

  auto hbar_of = [&](int64_t n) {
    return static_cast<const TState*>(p.states_h) + ((se.chunk0 + n) * p.heads_q + h) * D * D;
  };
  auto issue = [&](int64_t n) {
    uint8_t* st = smem + (n & 1) * Smem::kStage;
    const int valid = chunk_valid(n);
    if (tid < kRscanWts / 4)
      tiling::cp_async_16(wts + (n & 1) * kRscanWts + 4 * tid,
                          wts_src + (se.chunk0 + n) * p.heads_q * 3 * kRscanWts + 4 * tid, true);
    if (hbar_staged)
      tiling::load_rows_async(st + Smem::kKeyTile + D * 2, VP,
                              reinterpret_cast<const uint8_t*>(hbar_of(n) + tile_row0 * D), D * 2, D * 2, 64, 64, tid,
                              kRscanThreads);
    if (!same)
      tiling::load_rows_async(st, KP, kbase + n * C * kstride + tile_row0 * kbytes, kstride, 64 * kbytes, C, valid,
                              tid, kRscanThreads);
    tiling::load_rows_async(st + Smem::kKeyTile, VP, vbase + n * C * vstride, vstride, D * vbytes, C, valid, tid,
                            kRscanThreads);
    tiling::cp_async_commit();
  };

  // the decay from the run's end to the chunk being scanned (segmented, thread 0)
  float run_decay = 1.f;
  if (c_end > c_begin) issue(c_end - 1);

  for (int n = c_end - 1; n >= c_begin; --n) {
    const int64_t cidx = se.chunk0 + n;
    tiling::cp_async_wait<0>();
    // (A) raw rows of chunk n and its weights visible; every warp is done with chunk n+1's stage
    __syncthreads();
    if (n > c_begin) issue(n - 1);  // overlaps everything below
    const float* wt = wts + (n & 1) * kRscanWts;
    const float decay = wt[kRscanChunk], cn = wt[kRscanChunk + 1];
    if (tid == 0) {
      // segmented: the decay from the run's end to the state after chunk n, for the GLA / cov
      // kernels (roles 0 and 1; role 2 has role 0's f); then chunk n's own decay joins it
      if (segmented && role < 2 && blockIdx.z == 0)
        p.seg.chunk_decay[(cidx * p.heads_q + h) * 2 + role] = run_decay;
      run_decay *= decay;
    }
    const TState* hb = hbar_of(n);
    if (role == 2 && !hbar_staged && n > c_begin)  // H-bar_{n-1} into L2 for the next chunk's dense add
      tiling::prefetch_l2_range(hb - p.heads_q * D * D + tile_row0 * D, 64 * D * static_cast<int>(sizeof(TState)), tid,
                                kRscanThreads);
    // the state after chunk n
    rscan::store_state<D, NT>(per_chunk + (cidx * p.heads_q + h) * D * D, acc, row0, col0, lane);
    // operands of chunk n, in place
    uint8_t* kt_tile = smem + (n & 1) * Smem::kStage;
    uint8_t* vt_tile = kt_tile + Smem::kKeyTile;
    if (same) {
      // weighted keys from the value rows (this tile's 64 columns); the values are rewritten after
      // every thread has read them (only when they are not bf16)
      for (int i = tid; i < C * 8; i += kRscanThreads) {
        const int t = i / 8, g = i % 8;
        float x[8];
        rscan::load8(vt_tile + t * VP + (tile_row0 + 8 * g) * vbytes, vals_t.dtype, x);
        rscan::store_split8<kLo>(kt_tile + t * KP + g * 32, x, wt[t]);
      }
      if (!vals_raw) __syncthreads();
    } else {
      rscan::split_in_place<64, kLo>(kt_tile, KP, keys_t.dtype, wt, tid);
    }
    if (!vals_raw) rscan::split_in_place<D, kLo>(vt_tile, VP, vals_t.dtype, nullptr, tid);
    __syncthreads();  // (B) operands ready
    // H-bar_n (this thread's fragment) for role 2: from the stage, or L2 hits (prefetched a chunk earlier)
    float hbv[NT][4];
    if (role == 2) {
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e2 = 0; e2 < 2; ++e2) {
          const int col = col0 + 8 * j + 2 * c;
          const TState* src = hb + (row0 + r + 8 * e2) * D + col;
          if (hbar_staged) {
            const uint32_t v = *reinterpret_cast<const uint32_t*>(vt_tile + (m0 + r + 8 * e2) * VP + D * 2 + col * 2);
            hbv[j][2 * e2] = tiling::bf16_lo(v);
            hbv[j][2 * e2 + 1] = tiling::bf16_hi(v);
          } else if constexpr (sizeof(TState) == 4) {
            const float2 v = *reinterpret_cast<const float2*>(src);
            hbv[j][2 * e2] = v.x;
            hbv[j][2 * e2 + 1] = v.y;
          } else {
            const uint32_t v = *reinterpret_cast<const uint32_t*>(src);
            hbv[j][2 * e2] = tiling::bf16_lo(v);
            hbv[j][2 * e2 + 1] = tiling::bf16_hi(v);
          }
        }
    }
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][e] *= decay;
    if (role == 2) {  // + c_n H-bar_n (the dense part of Pi_n), before this chunk's products
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] += cn * hbv[j][e];
    }
    const uint32_t k_base = tiling::smem_addr(kt_tile), v_base = tiling::smem_addr(vt_tile);
    if (vals_raw) rscan::chunk_products<NT, KP, VP, true, kLo>(acc, k_base, v_base, m0, col0, lane);
    else rscan::chunk_products<NT, KP, VP, false, kLo>(acc, k_base, v_base, m0, col0, lane);
  }
  if (!segmented) {
    rscan::store_state<D, NT>(per_seq + (seq * p.heads_q + h) * D * D, acc, row0, col0, lane);
  } else {
    rscan::store_state<D, NT>(p.seg.totals + p.seg.total_index(seq, run, h, p.heads_q, role) * D * D, acc, row0,
                              col0, lane);
    // the run's total decay, which thread 0 accumulated chunk by chunk
    if (role < 2 && blockIdx.z == 0 && tid == 0)
      p.seg.seg_decay[((seq * p.seg.count + run) * p.heads_q + h) * 2 + role] = run_decay;
  }
}

// The reverse scans' per-chunk weights, ahead of the scans: they are chunk-local, so this pass
// forms them for every chunk at once and the scans' chains only load them (with the chunk's rows).
// Row (chunk n, query head h, role) of BackwardWorkspace::scan_wts, from the chunk-local cumsum F
// of the role's log-gate (f for roles 0 and 2, g for role 1):
//   role 0  e^{F_j};  role 1  s e^{G_j};  role 2  b_j = e^{F_j} s_j with s_j = w_j + e^{2 (F_{j+1} - F_j)} s_{j+1}
//   (in O(C) by a warp suffix scan, only non-positive exponents), and c_n = e^{2 F_0} s_0;
//   then the chunk's decay e^{F_end}. Tokens past the chunk's end weigh 0.
// Grid: (chunk_bound, H_q). Block: one warp per role; lane l owns tokens 2l, 2l + 1.
// (A template only so that the header can be included by several translation units.)
template <int C = kRscanChunk>
__global__ void __launch_bounds__(kScanWeightsThreads) bwd_scan_weights_kernel(BackwardParams p) {
  static_assert(C == 64, "a lane owns two tokens");
  __shared__ float cumsum[3][C];
  const int role = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (role == 2 && !p.bp_lambda) return;
  const int64_t cidx = blockIdx.x, h = blockIdx.y;
  const tiling::ChunkEntry ce = p.geo.chunk_entry(cidx);
  if (ce.seq < 0) return;
  const int64_t b = p.geo.sequence(ce.seq).b;
  const int valid = ce.len;
  const float* wdata = static_cast<const float*>(p.ws.w.data);
  float* F = cumsum[role];
  float w[2];
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    const int t = 2 * lane + q;
    w[q] = role == 2 && t < valid ? wdata[p.ws.w.offset(b, ce.t0 + t, h)] : 0.f;
  }
  gating::warp_chunk_cumsum64(role == 1 ? p.gate_s : p.gate_h, b, ce.t0, valid, h, F, lane);
  const float F0 = F[2 * lane], F1 = F[2 * lane + 1];
  const bool v0 = 2 * lane < valid, v1 = 2 * lane + 1 < valid;
  float wt0, wt1, cn = 0.f;
  if (role == 2) {
    // s_i over pairs in-lane, then an inclusive suffix scan over lanes (v of lane l: the sum over
    // tokens >= 2l relative to token 2l)
    float v = w[0] + expf(2.f * (F1 - F0)) * w[1];
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float vo = __shfl_down_sync(0xffffffffu, v, o);
      const float Fo = __shfl_down_sync(0xffffffffu, F0, o);
      if (lane + o < 32) v += expf(2.f * (Fo - F0)) * vo;
    }
    const float v_next = __shfl_down_sync(0xffffffffu, v, 1);
    const float F_next = __shfl_down_sync(0xffffffffu, F0, 1);
    const float s1 = w[1] + (lane < 31 ? expf(2.f * (F_next - F1)) * v_next : 0.f);
    wt0 = v0 ? expf(F0) * v : 0.f;
    wt1 = v1 ? expf(F1) * s1 : 0.f;
    cn = expf(2.f * F0) * v;  // lane 0's is c_n
  } else {
    const float s = role == 1 ? p.scale : 1.f;
    wt0 = v0 ? s * expf(F0) : 0.f;
    wt1 = v1 ? s * expf(F1) : 0.f;
  }
  float* row = p.ws.scan_wts + ((cidx * p.heads_q + h) * 3 + role) * kRscanWts;
  *reinterpret_cast<float2*>(row + 2 * lane) = make_float2(wt0, wt1);
  if (lane == 0) *reinterpret_cast<float4*>(row + C) = make_float4(expf(F[valid - 1]), cn, 0.f, 0.f);
}

// Segmented scans only: forms the carries from the run totals, walking the runs from the last to
// the first: the carry into run i is the state after run i + 1, carry_i = total_{i+1} + decay_{i+1}
// carry_{i+1} (the last run's carry is 0), and the state after the first run is the sequence's
// final state (r_first / s_first / b_total; the scan's initial state for an empty sequence).
//  part 1 (S^): the carry replaces the run's S^ total in place (slot 1), for the GLA kernel.
//  part 0 (R-bar, B~): the cov kernel needs only G = R + R^T (+ B) and <Hbar, R + B/2> =
//    <Hbar, G> / 2 (Hbar and B~ are symmetric), so slot 2 of each run receives the carry of G,
//    one D x D read per staged element there instead of three. The thread of element (r, c) also
//    walks R's (c, r) chain and writes only (r, c) of slot 2: no slot it reads is written.
// Grid: (num_seqs * H_q, 2 parts, D * D / (4 * kCarryThreads)); 4 consecutive
// elements of a row per thread.
constexpr int kCarryThreads = 256;
template <int D>
__global__ void __launch_bounds__(kCarryThreads) bwd_scan_carry_kernel(BackwardParams p) {
  static_assert(D * D % (4 * kCarryThreads) == 0, "whole blocks of float4");
  const bool sym = blockIdx.y == 0, lam = p.bp_lambda;
  const int64_t seq = blockIdx.x / p.heads_q, h = blockIdx.x % p.heads_q;
  const tiling::SeqEntry se = p.geo.sequence(seq);
  const int64_t nchunks = (se.len + p.geo.chunk - 1) / p.geo.chunk;
  const int e = (blockIdx.z * kCarryThreads + threadIdx.x) * 4, row = e / D, col = e % D;
  auto slot = [&](int64_t run, int role) { return p.seg.totals + p.seg.total_index(seq, run, h, p.heads_q, role) * D * D; };
  auto decay = [&](int64_t run, int role) { return p.seg.seg_decay[((seq * p.seg.count + run) * p.heads_q + h) * 2 + role]; };
  auto axpy = [](float4& c, float d, const float4& t) {  // c <- t + d c
    c = make_float4(t.x + d * c.x, t.y + d * c.y, t.z + d * c.z, t.w + d * c.w);
  };
  // the scan's initial state, for a sequence without chunks
  auto init = [&](const StateTensor& st, float sign, bool transposed) {
    if (st.data == nullptr) return make_float4(0.f, 0.f, 0.f, 0.f);
    const float* src = static_cast<const float*>(st.data) + st.offset(seq, h);
    float v[4];
    for (int q = 0; q < 4; ++q)
      v[q] = sign * (transposed ? src[(col + q) * st.stride_row + row] : src[row * st.stride_row + col + q]);
    return make_float4(v[0], v[1], v[2], v[3]);
  };
  const int64_t runs = p.seg.used(nchunks);
  if (!sym) {
    float4 c = runs == 0 ? init(p.d_st, 1.f, false) : make_float4(0.f, 0.f, 0.f, 0.f);
    for (int64_t i = runs - 1; i >= 0; --i) {
      float4* at = reinterpret_cast<float4*>(slot(i, 1) + e);
      const float4 t = *at;
      if (i + 1 < runs) *at = c;
      axpy(c, decay(i, 1), t);
    }
    *reinterpret_cast<float4*>(p.ws.s_first + (seq * p.heads_q + h) * D * D + e) = c;
    return;
  }
  float4 r = runs == 0 ? init(p.d_ht, -1.f, false) : make_float4(0.f, 0.f, 0.f, 0.f);  // R (row, col..)
  float4 rt = runs == 0 ? init(p.d_ht, -1.f, true) : make_float4(0.f, 0.f, 0.f, 0.f);  // R (col.., row)
  float4 b = make_float4(0.f, 0.f, 0.f, 0.f);                                           // B~ (row, col..)
  for (int64_t i = runs - 1; i >= 0; --i) {
    const float* r_tot = slot(i, 0);
    float4* g_at = reinterpret_cast<float4*>(slot(i, 2) + e);
    const float4 t = *reinterpret_cast<const float4*>(r_tot + e);
    const float4 tt = make_float4(r_tot[col * D + row], r_tot[(col + 1) * D + row], r_tot[(col + 2) * D + row],
                                  r_tot[(col + 3) * D + row]);
    const float4 tb = lam ? *g_at : make_float4(0.f, 0.f, 0.f, 0.f);
    if (i + 1 < runs)
      *g_at = make_float4(r.x + rt.x + b.x, r.y + rt.y + b.y, r.z + rt.z + b.z, r.w + rt.w + b.w);
    const float d = decay(i, 0);
    axpy(r, d, t);
    axpy(rt, d, tt);
    axpy(b, d, tb);
  }
  *reinterpret_cast<float4*>(p.ws.r_first + (seq * p.heads_q + h) * D * D + e) = r;
  if (lam) *reinterpret_cast<float4*>(p.ws.b_total + (seq * p.heads_q + h) * D * D + e) = b;
}

}  // namespace kernels
GKA_NAMESPACE_END
