// gka/kernels/bwd_gla_kernel.cuh: the GLA adjoint of one chunk (spec 4.2 steps 3-5, as
// gla_adjoint_chunked in reference/head_backward_chunked.h) for one query head:
//
//   dk^S_j = e^{G_C' - G_j} (S^ v_j)   + sum_{i>=j} s e^{G_i - G_j} (do_i . v_j) q~_i
//   dv_j   = e^{G_C' - G_j} (S^T k_j)  + sum_{i>=j} s e^{G_i - G_j} (q~_i . k_j) do_i
//   dG_j   = q~_j . dq~_j - k_j . dk^S_j,  + <S^, S-bar_{n+1}> at the last valid token, in local form
//            e^{G_C'} <S^, S-bar_n> + sum_i e^{G_C' - G_i} k_i^T S^ v_i
//   dg_s   = chunk-local reverse cumsum of dG
//
// with S^ = ws.s_end[chunk] (the gradient w.r.t. the state after the chunk, fp32 [key][value]),
// G the chunk-local cumsum of g, C' the last valid token. Writes ws.dk (dk^S, per query head),
// ws.dv (per query head) and ws.dg_s.
//
// Grid: (chunk_bound, H_q). Block: 256 threads = 8 warps: warp w owns chunk rows 16 (w % 4) .. +15
// and columns (w / 4) D/2 .. of dk^S / dv; both warps of a slab form the (cheap) 16 x C score tiles.
// q~ and S^ (fp32, they carry the cancellation of the adjoint) are staged and multiplied as bf16
// hi + lo; k, v, do are hi + lo too unless all three are bf16 inputs, which are exact: then their lo
// tiles are neither staged nor multiplied (bitwise the same results). The masked C x C score tiles
// are split again before they multiply q~ / do. The mask keeps i >= j, so slab w skips score column
// pairs and k-steps < w (37.5% of the intra products).
// Performance (H200, B = 8, T = 8192, H = 16, D = 128, bf16 k/v/do, fp32 states: 16,384 programs;
// "[perf]" in tests/gpu/test_bwd_perf_intra.cu): the 4-warp version ran 7.67 ms, latency bound
// (one CTA per SM, 216 registers), and its <S^, S-bar> reduction was a scalar loop of dependent
// 4-byte loads (128 per thread, ~30 L2/DRAM round trips). Now: 8 warps with half-width
// accumulators; S^ staged and dotted with S-bar from one batch of 16-byte loads; bf16 k, v, do in
// one batch of loads and without lo products; causal skipping; dG's reverse cumsum by a warp scan
// (it was an O(C) smem loop per token).
// Measured (H200, a82d4bb): 3.59 ms at the benchmark shape (was 7.67 ms); 191 registers (D = 128),
// no spills. Like the cov kernel it is bound by un-overlapped staging at one CTA per SM.
// Shared memory: BwdGlaSmem<D>::kBytes = 81 KiB (D = 64), 193 KiB (D = 128; above sm_80's 163 KiB
// per block: the layout keeps room for the lo tiles of fp32 / fp16 k, v, do).
#pragma once

#include <cstdint>
#include <cuda_bf16.h>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/kernels/backward_params.cuh"
#include "gka/tiling/chunks.cuh"
#include "gka/tiling/mma.cuh"
#include "gka/tiling/stage.cuh"
#include "gka/tiling/warp_gemm.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

constexpr int kBwdGlaThreads = 256;  // 8 warps: 4 m16 row slabs x 2 column halves
constexpr int kBwdGlaChunk = 64;

template <int D>
struct BwdGlaSmem {
  static constexpr int kTileKD = kBwdGlaChunk * D * 2;  // one bf16 [C][D] tile
  static constexpr int kTileDD = D * D * 2;             // one bf16 [D][D] tile
  static constexpr int kS = 0;                          // S^ hi, lo
  static constexpr int kK = kS + 2 * kTileDD;           // then K, V, Q~, dO: hi, lo each
  static constexpr int kV = kK + 2 * kTileKD;
  static constexpr int kQ = kV + 2 * kTileKD;
  static constexpr int kO = kQ + 2 * kTileKD;
  static constexpr int kScal = kO + 2 * kTileKD;
  // G, dG, per-row end-term parts, block reduction slots
  static constexpr int kBytes = kScal + (5 * kBwdGlaChunk + 8) * 4;
  static_assert(kBytes <= 227 * 1024, "one CTA per SM at most");
};

namespace bwd_gla_detail {
GKA_DEVICE inline float4 load4(const float* p, int i) { return __ldg(reinterpret_cast<const float4*>(p) + i); }
GKA_DEVICE inline float4 load4(const __nv_bfloat16* p, int i) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(p) + i);
  return make_float4(tiling::bf16_lo(u.x), tiling::bf16_hi(u.x), tiling::bf16_lo(u.y), tiling::bf16_hi(u.y));
}
}  // namespace bwd_gla_detail

// kLo16: the lo parts of k, v, do (false: all three are bf16, exact; their lo tiles are neither
// staged nor multiplied, which leaves every result bitwise unchanged).
template <int D, class TState, bool kLo16>
GKA_DEVICE inline void bwd_gla_body(const BackwardParams& p, uint8_t* smem) {
  using Smem = BwdGlaSmem<D>;
  using namespace tiling;
  constexpr int C = kBwdGlaChunk;
  constexpr int NS = C / 8;   // n8 tiles of a warp's score rows
  constexpr int NH = D / 16;  // n8 tiles of a warp's half of the D columns
  constexpr int kT = kBwdGlaThreads, kW = kT / 32;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, r = lane >> 2, c = lane & 3;
  const int slab = warp & 3, hf = warp >> 2;  // rows 16 slab .., output columns hf D/2 ..
  const int64_t cidx = blockIdx.x, h = blockIdx.y, hk = h / p.group;
  const ChunkEntry ce = p.geo.chunk_entry(cidx);
  if (ce.seq < 0) return;
  const int64_t b = p.geo.varlen ? 0 : ce.seq;
  const int len = ce.len;
  const int64_t t0 = ce.t0;
  const float s = p.scale;
  const float* shat = p.ws.s_end + (cidx * p.heads_q + h) * D * D;
  const TState* sbar = static_cast<const TState*>(p.states_s) + (cidx * p.heads_q + h) * D * D;

  uint8_t* s_hi = smem + Smem::kS;
  uint8_t* k_hi = smem + Smem::kK;
  uint8_t* v_hi = smem + Smem::kV;
  uint8_t* q_hi = smem + Smem::kQ;
  uint8_t* o_hi = smem + Smem::kO;
  float* G = reinterpret_cast<float*>(smem + Smem::kScal);
  float* dG = G + C;         // [2 halves][C]: k_j . dk^S_j
  float* e_row = dG + 2 * C;  // [2 halves][C]: e^{G_C' - G_j} k_j^T S^ v_j
  float* red = e_row + 2 * C;

  if (warp == 0) {
    for (int t = lane; t < C; t += 32) G[t] = t < len ? p.gate_s.at(b, t0 + t, h) : 0.f;
    __syncwarp();
    gating::warp_cumsum64(G, len, lane);
  }
  // S^ -> bf16 hi + lo tiles, and <S^, S-bar_n> (fixed-order partial sums, deterministic) from the
  // same loads: every 16-byte load of both states in flight together
  {
    constexpr int kPer = D * D / 4 / kT;
    float4 sv[kPer], bv[kPer];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      sv[u] = bwd_gla_detail::load4(shat, tid + u * kT);
      bv[u] = bwd_gla_detail::load4(sbar, tid + u * kT);
    }
    float part = 0.f;
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int i = tid + u * kT, row = (4 * i) / D, col = (4 * i) % D;
      part += sv[u].x * bv[u].x + sv[u].y * bv[u].y + sv[u].z * bv[u].z + sv[u].w * bv[u].w;
      uint32_t h0, l0, h1, l1;
      split_bf16(sv[u].x, sv[u].y, h0, l0);
      split_bf16(sv[u].z, sv[u].w, h1, l1);
      const uint32_t off = SwizzledTile<D, D>::offset(row, col);
      *reinterpret_cast<uint2*>(s_hi + off) = make_uint2(h0, h1);
      *reinterpret_cast<uint2*>(s_hi + Smem::kTileDD + off) = make_uint2(l0, l1);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
    if (lane == 0) red[warp] = part;
  }
  if constexpr (kLo16) {
    stage_token_tile<C, D, kT, true>(p.k, b, t0, hk, len, nullptr, k_hi, k_hi + Smem::kTileKD, tid);
    stage_token_tile<C, D, kT, true>(p.v, b, t0, hk, len, nullptr, v_hi, v_hi + Smem::kTileKD, tid);
    stage_token_tile<C, D, kT, true>(p.d_o, b, t0, h, len, nullptr, o_hi, o_hi + Smem::kTileKD, tid);
  } else {  // three bf16 tiles, raw copies, all loads in flight together
    const TokenTensor* const tt[3] = {&p.k, &p.v, &p.d_o};
    const int64_t heads[3] = {hk, hk, h};
    const float* const scales[3] = {nullptr, nullptr, nullptr};
    uint8_t* const dst[3] = {k_hi, v_hi, o_hi};
    stage_bf16_token_tiles<3, C, D, kT>(tt, heads, b, t0, len, scales, dst, tid);
  }
  stage_token_tile<C, D, kT, true>(p.ws.qmix, b, t0, h, len, nullptr, q_hi, q_hi + Smem::kTileKD, tid);
  __syncthreads();

  const SplitTile tS{smem_addr(s_hi), smem_addr(s_hi + Smem::kTileDD)};
  const SplitTile tK{smem_addr(k_hi), smem_addr(k_hi + Smem::kTileKD)};
  const SplitTile tV{smem_addr(v_hi), smem_addr(v_hi + Smem::kTileKD)};
  const SplitTile tQ{smem_addr(q_hi), smem_addr(q_hi + Smem::kTileKD)};
  const SplitTile tO{smem_addr(o_hi), smem_addr(o_hi + Smem::kTileKD)};
  const int m0 = 16 * slab, ja = m0 + r, jb = ja + 8, n0 = hf * (D / 2);
  const float gend = G[len - 1];
  // e^{G_C' - G_j}, 0 on padded rows
  const float dec_a = ja < len ? expf(gend - G[ja]) : 0.f, dec_b = jb < len ? expf(gend - G[jb]) : 0.f;

  auto row_scale = [&](float (&a)[NH][4]) {
#pragma unroll
    for (int j = 0; j < NH; ++j) {
      a[j][0] *= dec_a; a[j][1] *= dec_a; a[j][2] *= dec_b; a[j][3] *= dec_b;
    }
  };
  // the score tile (rows j of this warp, columns i) masked to i >= j, both valid, times s e^{G_i - G_j};
  // then split into A fragments
  auto mask_split = [&](float (&sc)[NS][4], uint32_t (&ah)[C / 16][4], uint32_t (&al)[C / 16][4]) {
#pragma unroll
    for (int j = 0; j < NS; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = m0 + acc_row(lane, e), i = acc_col(lane, j, e);
        sc[j][e] = (i >= row && i < len && row < len) ? s * expf(G[i] - G[row]) * sc[j][e] : 0.f;
      }
    acc_to_a_split_all<C>(sc, ah, al);
  };
  // k_j . a_j over this warp's column half for rows ja, jb (k as staged), reduced over the quad
  auto kdot = [&](const float (&a)[NH][4], float& da, float& db) {
    da = 0.f;
    db = 0.f;
#pragma unroll
    for (int j = 0; j < NH; ++j) {
      const int col = n0 + 8 * j + 2 * c;
      const uint32_t oa = SwizzledTile<D, C>::offset(ja, col), ob = SwizzledTile<D, C>::offset(jb, col);
      const uint32_t ha = *reinterpret_cast<const uint32_t*>(k_hi + oa);
      const uint32_t la = kLo16 ? *reinterpret_cast<const uint32_t*>(k_hi + Smem::kTileKD + oa) : 0u;
      const uint32_t hb = *reinterpret_cast<const uint32_t*>(k_hi + ob);
      const uint32_t lb = kLo16 ? *reinterpret_cast<const uint32_t*>(k_hi + Smem::kTileKD + ob) : 0u;
      da += (bf16_lo(ha) + bf16_lo(la)) * a[j][0] + (bf16_hi(ha) + bf16_hi(la)) * a[j][1];
      db += (bf16_lo(hb) + bf16_lo(lb)) * a[j][2] + (bf16_hi(hb) + bf16_hi(lb)) * a[j][3];
    }
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
      da += __shfl_xor_sync(0xffffffffu, da, o);
      db += __shfl_xor_sync(0xffffffffu, db, o);
    }
  };
  auto store_rows = [&](const TokenTensor& out, const float (&a)[NH][4]) {
    float* pa = static_cast<float*>(out.data) + out.offset(b, t0 + ja, h) + n0 + 2 * c;
    float* pb = static_cast<float*>(out.data) + out.offset(b, t0 + jb, h) + n0 + 2 * c;
#pragma unroll
    for (int j = 0; j < NH; ++j) {
      if (ja < len) *reinterpret_cast<float2*>(pa + 8 * j) = make_float2(a[j][0], a[j][1]);
      if (jb < len) *reinterpret_cast<float2*>(pb + 8 * j) = make_float2(a[j][2], a[j][3]);
    }
  };

  float acc[NH][4];
  float sc[NS][4];
  uint32_t ah[C / 16][4], al[C / 16][4];

  // ---- dk^S -------------------------------------------------------------------------------------
  zero_acc(acc);
  gemm_nk2<D, C, D, D, NH, kLo16, true>(acc, tV, tS, m0, n0, lane);  // sum_val S^[key][val] v_j[val]
  row_scale(acc);
  {
    float ea, eb;  // the end term's per-token parts (this half)
    kdot(acc, ea, eb);
    if (c == 0) {
      e_row[hf * C + ja] = ea;
      e_row[hf * C + jb] = eb;
    }
  }
  // the mask keeps i >= j: the slab's rows need score columns / k-steps >= 16 slab only
  zero_acc(sc);
  gemm_nk2<D, C, D, C, NS, kLo16, kLo16>(sc, tV, tO, m0, 0, lane, slab);  // v_j . do_i
  mask_split(sc, ah, al);
  gemm_rkn2<C, D, C, NH, true, true>(acc, ah, al, tQ, n0, lane, slab);  // + sum_i M_ji q~_i
  store_rows(p.ws.dk, acc);
  {
    float da, db;
    kdot(acc, da, db);
    if (c == 0) {
      dG[hf * C + ja] = da;
      dG[hf * C + jb] = db;
    }
  }

  // ---- dv ---------------------------------------------------------------------------------------
  zero_acc(acc);
  gemm_kn2<D, C, D, D, NH, kLo16, true>(acc, tK, tS, m0, n0, lane);  // sum_key k_j[key] S^[key][val]
  row_scale(acc);
  zero_acc(sc);
  gemm_nk2<D, C, D, C, NS, kLo16, true>(sc, tK, tQ, m0, 0, lane, slab);  // k_j . q~_i
  mask_split(sc, ah, al);
  gemm_rkn2<C, D, C, NH, true, kLo16>(acc, ah, al, tO, n0, lane, slab);  // + sum_i M_ji do_i
  store_rows(p.ws.dv, acc);

  // ---- dG: end term at C', chunk-local reverse cumsum (one warp, fixed order) ---------------------
  __syncthreads();
  if (warp == 0) {
    float e = 0.f;  // sum of the per-token end parts
    for (int i = lane; i < len; i += 32) e += e_row[i] + e_row[C + i];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) e += __shfl_xor_sync(0xffffffffu, e, o);
    float sred = 0.f;
#pragma unroll
    for (int q = 0; q < kW; ++q) sred += red[q];
    const float end = expf(gend) * sred + e;
    // G is dead (gend, the decays are in registers): it takes dG_{len-1-t} = q~.dq~ - k.dk^S reversed
    const float* qdq = static_cast<const float*>(p.ws.qdq.data);
    for (int t = lane; t < C; t += 32) {
      const int j = len - 1 - t;
      G[t] = t < len ? qdq[p.ws.qdq.offset(b, t0 + j, h)] - (dG[j] + dG[C + j]) : 0.f;
    }
    __syncwarp();
    gating::warp_cumsum64(G, len, lane);  // G[t] = sum_{l >= len-1-t} dG_l
    __syncwarp();
    for (int j = lane; j < len; j += 32)
      static_cast<float*>(p.ws.dg_s.data)[p.ws.dg_s.offset(b, t0 + j, h)] = end + G[len - 1 - j];
  }
}

template <int D, class TState>
__global__ void __launch_bounds__(kBwdGlaThreads, 1) bwd_gla_kernel(BackwardParams p) {
  extern __shared__ __align__(128) uint8_t smem[];
  if (p.k.dtype == DType::kBF16 && p.v.dtype == DType::kBF16 && p.d_o.dtype == DType::kBF16)
    bwd_gla_body<D, TState, false>(p, smem);
  else
    bwd_gla_body<D, TState, true>(p, smem);
}

}  // namespace kernels
GKA_NAMESPACE_END
