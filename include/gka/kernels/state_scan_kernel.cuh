// gka/kernels/state_scan_kernel.cuh: the inter-chunk scan (spec 3.2) for H (keys k, values k,
// decay f) and S (keys k, values v, decay g). Emits the fp32 state before every chunk into the
// workspace and the final state H_T / S_T.
//
// Grid: (num_seqs * H_q, 2 [H, S], D / 64 row tiles). Block: 256 threads, 8 warps; warp w owns rows
// 16 (w % 4).. of the 64-row tile and columns (w / 4) * D/2 ... Token tiles arrive by cp.async into
// a two-stage raw buffer, the next chunk's load overlapping the current chunk's update.
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/tiling/chunks.cuh"
#include "gka/tiling/copy.cuh"
#include "gka/tiling/state_scan.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

struct StateScanParams {
  tiling::ChunkGeometry geo;
  int64_t heads_q = 0, group = 1;
  TokenTensor k, v, beta;
  gating::Gate gate_h, gate_s;
  bool l2norm_k = false, use_beta = false;
  StateTensor h0, s0, ht, st;
  float* states_h = nullptr;  // [chunk_bound][H_q][D][D]
  float* states_s = nullptr;
};

constexpr int kScanThreads = 256;
constexpr int kScanChunk = 64;

template <class Tin, int D>
struct ScanSmem {
  static constexpr int kPitch = D * static_cast<int>(sizeof(Tin)) + 16;
  static constexpr int kTile = kScanChunk * kPitch;
  // [stage][keys, values] raw tiles, then per-token scalars.
  static constexpr int kScalars = 2 * kTile * 2;
  static constexpr int kBytes = kScalars + 5 * kScanChunk * 4;
};

template <class Tin, int D, bool kSplit>
__global__ void __launch_bounds__(kScanThreads) state_scan_kernel(StateScanParams p) {
  using Smem = ScanSmem<Tin, D>;
  constexpr int NT = D / 16;  // n8 tiles per warp (D/2 columns)
  extern __shared__ __align__(128) uint8_t smem[];
  float* gates = reinterpret_cast<float*>(smem + Smem::kScalars);
  float* key_decay = gates + kScanChunk;
  float* key_scale = key_decay + kScanChunk;
  float* val_scale = key_scale + kScanChunk;
  float* misc = val_scale + kScanChunk;  // [0] = chunk decay

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t seq = blockIdx.x / p.heads_q, h = blockIdx.x % p.heads_q, hk = h / p.group;
  const bool is_s = blockIdx.y == 1;
  const int row_tile = blockIdx.z;
  const int row0 = row_tile * 64 + 16 * (warp & 3);  // first state row of this warp
  const int col0 = (warp >> 2) * (D / 2);
  const tiling::SeqEntry se = p.geo.sequence(seq);
  const int64_t nchunks = (se.len + kScanChunk - 1) / kScanChunk;
  const gating::Gate gate = is_s ? p.gate_s : p.gate_h;
  const StateTensor init = is_s ? p.s0 : p.h0;
  const StateTensor fin = is_s ? p.st : p.ht;
  float* states = is_s ? p.states_s : p.states_h;
  const TokenTensor& vt = is_s ? p.v : p.k;
  const int r = lane >> 2, c = lane & 3;

  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = row0 + r + (e >= 2 ? 8 : 0), col = col0 + 8 * j + 2 * c + (e & 1);
      acc[j][e] = (init.data != nullptr)
                      ? static_cast<const float*>(init.data)[init.offset(seq, h) + row * init.stride_row + col]
                      : 0.f;
    }

  const uint8_t* kbase = static_cast<const uint8_t*>(p.k.data) +
                         (se.b * p.k.stride_batch + hk * p.k.stride_head) * sizeof(Tin);
  const uint8_t* vbase = static_cast<const uint8_t*>(vt.data) +
                         (se.b * vt.stride_batch + hk * vt.stride_head) * sizeof(Tin);
  const int64_t kstride = p.k.stride_token * sizeof(Tin), vstride = vt.stride_token * sizeof(Tin);
  auto issue = [&](int64_t n) {
    const int64_t t0 = se.t0 + n * kScanChunk;
    const int valid = static_cast<int>(se.len - n * kScanChunk < kScanChunk ? se.len - n * kScanChunk : kScanChunk);
    uint8_t* st = smem + (n & 1) * 2 * Smem::kTile;
    tiling::load_rows_async(st, Smem::kPitch, kbase + t0 * kstride, kstride, D * sizeof(Tin), kScanChunk,
                            valid, tid, kScanThreads);
    if (is_s)
      tiling::load_rows_async(st + Smem::kTile, Smem::kPitch, vbase + t0 * vstride, vstride, D * sizeof(Tin),
                              kScanChunk, valid, tid, kScanThreads);
    tiling::cp_async_commit();
  };
  if (nchunks > 0) issue(0);
  // Gates of the next chunk are loaded one iteration ahead (warp 0), off the per-chunk critical path.
  auto chunk_valid = [&](int64_t n) {
    return static_cast<int>(se.len - n * kScanChunk < kScanChunk ? se.len - n * kScanChunk : kScanChunk);
  };
  float g_next[2] = {0.f, 0.f};
  auto load_gates = [&](int64_t n) {
    const int valid = chunk_valid(n);
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const int t = lane + 32 * q;
      g_next[q] = t < valid ? gate.at(se.b, se.t0 + n * kScanChunk + t, h) : 0.f;
    }
  };
  if (warp == 0 && nchunks > 0) load_gates(0);

  for (int64_t n = 0; n < nchunks; ++n) {
    const int64_t t0 = se.t0 + n * kScanChunk;
    const int valid = static_cast<int>(se.len - n * kScanChunk < kScanChunk ? se.len - n * kScanChunk : kScanChunk);
    if (n + 1 < nchunks) {
      issue(n + 1);
      tiling::cp_async_wait<1>();
    } else {
      tiling::cp_async_wait<0>();
    }
    // gates: chunk-local cumsum, decays from differences only
    if (warp == 0) {
      gates[lane] = g_next[0];
      gates[lane + 32] = g_next[1];
      if (n + 1 < nchunks) load_gates(n + 1);
      __syncwarp();
      gating::warp_cumsum64(gates, valid, lane);
      __syncwarp();
      const float last = gates[valid - 1];
      for (int t = lane; t < kScanChunk; t += 32)
        key_decay[t] = t < valid ? gating::decay(last, gates[t]) : 0.f;
      if (lane == 0) misc[0] = __expf(last);
    }
    __syncthreads();  // raw tiles of chunk n visible to all threads
    const uint8_t* st = smem + (n & 1) * 2 * Smem::kTile;
    const tiling::RawTile<Tin> keys{st, Smem::kPitch};
    const tiling::RawTile<Tin> vals{is_s ? st + Smem::kTile : st, Smem::kPitch};
    // per-token scales of the fused transforms: 8 tokens per warp
    for (int t = warp; t < kScanChunk; t += kScanThreads / 32) {
      float ss = 0.f;
      if (p.l2norm_k) {  // uniform branch: no reduction when the norm is off
        for (int i = lane; i < D; i += 32) { const float x = keys.at(t, i); ss += x * x; }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
      }
      const float b = (p.use_beta && t < valid)
                          ? gating::load_as_float(p.beta.data, p.beta.dtype, p.beta.offset(se.b, t0 + t, h))
                          : 0.f;
      if (lane == 0) {
        key_scale[t] = gating::fused_scale(p.l2norm_k, ss, p.use_beta, b);
        val_scale[t] = is_s ? gating::fused_scale(false, 0.f, p.use_beta, b) : key_scale[t];
      }
    }
    // emit the state before this chunk (fp32)
    {
      float* out = states + ((se.chunk0 + n) * p.heads_q + h) * D * D;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int col = col0 + 8 * j + 2 * c;
        *reinterpret_cast<float2*>(out + (row0 + r) * D + col) = make_float2(acc[j][0], acc[j][1]);
        *reinterpret_cast<float2*>(out + (row0 + r + 8) * D + col) = make_float2(acc[j][2], acc[j][3]);
      }
    }
    __syncthreads();
    tiling::state_chunk_update<Tin, NT, kSplit>(acc, misc[0], keys, vals, key_decay, key_scale, val_scale, row0,
                                                col0, lane);
    __syncthreads();  // the stage may be overwritten by the load issued in the next iteration
  }
  if ((fin.data != nullptr)) {
    float* out = static_cast<float*>(fin.data) + fin.offset(seq, h);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int col = col0 + 8 * j + 2 * c;
      *reinterpret_cast<float2*>(out + (row0 + r) * fin.stride_row + col) = make_float2(acc[j][0], acc[j][1]);
      *reinterpret_cast<float2*>(out + (row0 + r + 8) * fin.stride_row + col) = make_float2(acc[j][2], acc[j][3]);
    }
  }
}

}  // namespace kernels
GKA_NAMESPACE_END
