// gka/kernels/bwd_reverse_scan_kernel.cuh: the backward's three reverse chunk-state scans (spec 4.2
// step 2, 4.6 Passes C and E), in the organisation of the forward's state_scan_kernel run from the
// last chunk to the first:
//
//   role 0  R-bar: state <- e^{F_end} state + sum_j e^{F_j} z_j x_j^T            (start -dH_T)
//   role 1  S^:    state <- e^{G_end} state + sum_j s e^{G_j} q~_j do_j^T        (start dS_T)
//   role 2  B~:    state <- e^{F_end} state + c_n H-bar_n + sum_j b_j k_j k_j^T  (start 0; bp_lambda)
//          with b_j = sum_{i>=j} e^{F_i - F_j} e^{F_i} w_i and c_n = sum_j e^{2 F_j} w_j (Pi_n of
//          Pass E, read from H-bar_n instead of being materialised).
//
// Before chunk n's update the state ("after chunk n") goes to the role's per-chunk array at the
// chunk's index; after the loop the state goes to the per-sequence array. Every exponent is a
// difference of chunk-local cumsums or a cumsum itself (<= 0, spec 8). Keys and values are staged
// as fp32 and enter the MMA as bf16 hi + lo (state_chunk_update's split path), the state stays
// fp32 in accumulators: the scans are accurate to ~1e-5 relative. Deterministic (no atomics).
//
// Grid: (num_seqs * H_q, 3 roles, D / 64 row tiles). Block: 256 threads; warp w owns state rows
// 16 (w % 4).. of the 64-row tile and columns (w / 4) * D/2 ... The raw token rows of the next chunk
// (n - 1) arrive by cp.async while chunk n is converted and applied.
// Shared memory: RscanSmem<D>::kBytes = 103 KiB (D = 64), 199 KiB (D = 128; above sm_80's 163 KiB
// per block: the raw stages are sized for fp32 rows, a bf16-row variant would fit).
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/kernels/backward_params.cuh"
#include "gka/tiling/chunks.cuh"
#include "gka/tiling/copy.cuh"
#include "gka/tiling/mma.cuh"
#include "gka/tiling/state_scan.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

constexpr int kRscanThreads = 256;
constexpr int kRscanChunk = 64;

template <int D>
struct RscanSmem {
  // one token row of the widest input (fp32), padded 16 B: conflict-free fragment reads
  static constexpr int kPitch = D * 4 + 16;
  static constexpr int kTile = kRscanChunk * kPitch;
  static constexpr int kRaw = 0;              // [stage][keys, values] rows as loaded (any dtype)
  static constexpr int kF32 = 2 * 2 * kTile;  // keys, values as fp32
  static constexpr int kScalars = kF32 + 2 * kTile;
  // gates / cumsum, per-token weights, ones, w, misc
  static constexpr int kBytes = kScalars + (4 * kRscanChunk + 4) * 4;
  // CTAs per SM the shared memory allows (2 at D = 64): the register cap that keeps them resident
  // (ptxas' own choice at D = 64, 80 registers, spills)
  static constexpr int kMinBlocks = 2 * kBytes <= 227 * 1024 ? 2 : 1;
};

// Tokens [t0, t0 + 64) of a token tensor rows -> fp32 [64][D] tile at `pitch` bytes per row.
template <int D>
GKA_DEVICE inline void rscan_to_fp32(const uint8_t* raw, DType t, uint8_t* dst, int pitch, int tid) {
  for (int i = tid; i < kRscanChunk * D / 4; i += kRscanThreads) {
    const int row = i / (D / 4), c4 = (i % (D / 4)) * 4;
    const uint8_t* src = raw + row * pitch;
    float4 v;
    if (t == DType::kFP32) {
      v = *reinterpret_cast<const float4*>(src + c4 * 4);
    } else {
      const uint2 w = *reinterpret_cast<const uint2*>(src + c4 * 2);
      if (t == DType::kBF16) {
        v = make_float4(tiling::bf16_lo(w.x), tiling::bf16_hi(w.x), tiling::bf16_lo(w.y), tiling::bf16_hi(w.y));
      } else {
        const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&w.x));
        const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&w.y));
        v = make_float4(a.x, a.y, b.x, b.y);
      }
    }
    *reinterpret_cast<float4*>(dst + row * pitch + c4 * 4) = v;
  }
}

template <int D, class TState>
__global__ void __launch_bounds__(kRscanThreads, RscanSmem<D>::kMinBlocks) bwd_reverse_scan_kernel(BackwardParams p) {
  using Smem = RscanSmem<D>;
  constexpr int NT = D / 16;  // n8 tiles per warp (D/2 columns)
  constexpr int C = kRscanChunk;
  const int role = blockIdx.y;
  if (role == 2 && !p.bp_lambda) return;
  extern __shared__ __align__(128) uint8_t smem[];
  float* gates = reinterpret_cast<float*>(smem + Smem::kScalars);  // raw log-gates, then the cumsum
  float* wt = gates + C;                                             // per-token key weight
  float* ones = wt + C;
  float* wv = ones + C;                                              // role 2: w of the chunk
  float* misc = wv + C;                                              // [0] chunk decay, [1] c_n

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, r = lane >> 2, c = lane & 3;
  const int64_t seq = blockIdx.x / p.heads_q, h = blockIdx.x % p.heads_q, hk = h / p.group;
  const tiling::SeqEntry se = p.geo.sequence(seq);
  const int64_t nchunks = (se.len + C - 1) / C;
  const int row0 = blockIdx.z * 64 + 16 * (warp & 3);
  const int col0 = (warp >> 2) * (D / 2);

  const TokenTensor keys_t = role == 0 ? p.ws.z : role == 1 ? p.ws.qmix : p.k;
  const TokenTensor vals_t = role == 0 ? p.x : role == 1 ? p.d_o : p.k;
  const bool same = role == 2;  // keys are the values: one tile
  const int64_t head = role == 2 ? hk : h;
  const gating::Gate gate = role == 1 ? p.gate_s : p.gate_h;
  float* per_chunk = role == 0 ? p.ws.r_end : role == 1 ? p.ws.s_end : p.ws.b_end;
  float* per_seq = role == 0 ? p.ws.r_first : role == 1 ? p.ws.s_first : p.ws.b_total;
  const int kbytes = dtype_size(keys_t.dtype), vbytes = dtype_size(vals_t.dtype);
  const uint8_t* kbase = static_cast<const uint8_t*>(keys_t.data) + keys_t.offset(se.b, se.t0, head) * kbytes;
  const uint8_t* vbase = static_cast<const uint8_t*>(vals_t.data) + vals_t.offset(se.b, se.t0, head) * vbytes;
  const int64_t kstride = keys_t.stride_token * kbytes, vstride = vals_t.stride_token * vbytes;
  auto chunk_valid = [&](int64_t n) { return static_cast<int>(se.len - n * C < C ? se.len - n * C : C); };

  // initial state: -dH_T (R-bar is pre-negated), dS_T, or 0
  float acc[NT][4];
  {
    const StateTensor init = role == 0 ? p.d_ht : role == 1 ? p.d_st : StateTensor{};
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
  if (tid < C) ones[tid] = 1.f;

  auto issue = [&](int64_t n) {
    uint8_t* st = smem + Smem::kRaw + (n & 1) * 2 * Smem::kTile;
    const int valid = chunk_valid(n);
    tiling::load_rows_async(st, Smem::kPitch, kbase + n * C * kstride, kstride, D * kbytes, C, valid, tid,
                            kRscanThreads);
    if (!same)
      tiling::load_rows_async(st + Smem::kTile, Smem::kPitch, vbase + n * C * vstride, vstride, D * vbytes, C, valid,
                              tid, kRscanThreads);
    tiling::cp_async_commit();
  };
  if (nchunks > 0) issue(nchunks - 1);

  uint8_t* kf = smem + Smem::kF32;
  uint8_t* vf = same ? kf : kf + Smem::kTile;
  for (int64_t n = nchunks - 1; n >= 0; --n) {
    const int64_t cidx = se.chunk0 + n, t0 = se.t0 + n * C;
    const int valid = chunk_valid(n);
    tiling::cp_async_wait<0>();
    // (A) raw rows of chunk n visible; every warp is done with chunk n+1's tiles and scalars
    __syncthreads();
    if (n > 0) issue(n - 1);  // overlaps everything below
    // the state after chunk n
    {
      float* out = per_chunk + (cidx * p.heads_q + h) * D * D;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int col = col0 + 8 * j + 2 * c;
        *reinterpret_cast<float2*>(out + (row0 + r) * D + col) = make_float2(acc[j][0], acc[j][1]);
        *reinterpret_cast<float2*>(out + (row0 + r + 8) * D + col) = make_float2(acc[j][2], acc[j][3]);
      }
    }
    if (warp == 0) {
      // chunk-local cumsum; key weights from cumsums (<= 0) and their differences only
      for (int t = lane; t < C; t += 32) gates[t] = t < valid ? gate.at(se.b, t0 + t, h) : 0.f;
      if (role == 2)
        for (int t = lane; t < C; t += 32)
          wv[t] = t < valid ? static_cast<const float*>(p.ws.w.data)[p.ws.w.offset(se.b, t0 + t, h)] : 0.f;
      __syncwarp();
      gating::warp_cumsum64(gates, valid, lane);
      __syncwarp();
      float cpart = 0.f;
      for (int t = lane; t < C; t += 32) {
        const float Ft = gates[t];
        float x = 0.f;
        if (t < valid) {
          if (role == 0) {
            x = expf(Ft);
          } else if (role == 1) {
            x = p.scale * expf(Ft);
          } else {
#pragma unroll 1
            for (int i = t; i < valid; ++i) x += expf(2.f * gates[i] - Ft) * wv[i];  // e^{F_i-F_t} e^{F_i}
            cpart += expf(2.f * Ft) * wv[t];
          }
        }
        wt[t] = x;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) cpart += __shfl_xor_sync(0xffffffffu, cpart, o);
      if (lane == 0) {
        misc[0] = expf(gates[valid - 1]);
        misc[1] = cpart;
      }
    }
    const uint8_t* st = smem + Smem::kRaw + (n & 1) * 2 * Smem::kTile;
    rscan_to_fp32<D>(st, keys_t.dtype, kf, Smem::kPitch, tid);
    if (!same) rscan_to_fp32<D>(st + Smem::kTile, vals_t.dtype, vf, Smem::kPitch, tid);
    __syncthreads();  // (B) fp32 tiles, weights, decays ready
    const tiling::RawTile<float> keys{kf, Smem::kPitch}, vals{vf, Smem::kPitch};
    tiling::state_chunk_update<float, NT, true>(acc, misc[0], keys, vals, wt, ones, ones, row0, col0, lane);
    if (role == 2) {  // + c_n H-bar_n (the dense part of Pi_n)
      const float cn = misc[1];
      const TState* hb = static_cast<const TState*>(p.states_h) + (cidx * p.heads_q + h) * D * D;
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = row0 + r + (e >= 2 ? 8 : 0), col = col0 + 8 * j + 2 * c + (e & 1);
          acc[j][e] += cn * tiling::to_float(hb[row * D + col]);
        }
    }
  }
  {
    float* out = per_seq + (seq * p.heads_q + h) * D * D;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int col = col0 + 8 * j + 2 * c;
      *reinterpret_cast<float2*>(out + (row0 + r) * D + col) = make_float2(acc[j][0], acc[j][1]);
      *reinterpret_cast<float2*>(out + (row0 + r + 8) * D + col) = make_float2(acc[j][2], acc[j][3]);
    }
  }
}

}  // namespace kernels
GKA_NAMESPACE_END
