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
// Grid: (chunk_bound, H_q). Block: 128 threads = 4 warps, two CTAs per SM: warp w owns chunk rows
// 16 w .. +15 and all D columns of dk^S / dv, and forms its own 16 x C score tiles.
// q~ and S^ (fp32, they carry the cancellation of the adjoint) are staged and multiplied as bf16
// hi + lo; k, v, do are hi + lo too unless all three are bf16 inputs, which are exact: then their lo
// tiles are neither staged nor multiplied (bitwise the same results). The masked C x C score tiles
// are split again before they multiply q~ / do. The mask keeps i >= j, so slab w skips score column
// pairs and k-steps < w (37.5% of the intra products). S^ goes through a 64 x 64 piece slot, twice
// (dk^S, then dv). With fp32 / fp16 k, v or do, V and K share one region (K is restaged for dv and
// dk^S's k dots read k from global memory, unrounded).
// Performance (H200, B = 8, T = 8192, H = 16, D = 128, bf16 k/v/do, fp32 states: 16,384 programs;
// "[perf]" in tests/gpu/test_bwd_perf_intra.cu): the 4-warp version ran 7.67 ms, latency bound
// (one CTA per SM, 216 registers), and its <S^, S-bar> reduction was a scalar loop of dependent
// 4-byte loads (128 per thread, ~30 L2/DRAM round trips). Now: 8 warps with half-width
// accumulators; S^ staged and dotted with S-bar from one batch of 16-byte loads; bf16 k, v, do in
// one batch of loads and without lo products; causal skipping; dG's reverse cumsum by a warp scan
// (it was an O(C) smem loop per token).
// Measured (H200, a82d4bb, 8 warps, one CTA per SM): 3.59 ms at the benchmark shape; 191 registers.
// Now (perf-intra3): 4 warps x 2 CTAs per SM; 115,488 B smem at D = 128; bf16 path 253 registers,
// no spills (the fp32 / fp16 path spills 64 B); 2.37 ms at the benchmark shape.
// What is left (target <= 2 ms): S^ is staged twice (once per product; a 32 KiB slot for both
// products' pieces does not fit next to Q, dO, V/K) and each piece is stage -> sync -> product ->
// sync; prefetching the next piece into registers while the current one multiplies.
// Shared memory: BwdGlaSmem<D>::kBytes = Q~, dO (hi + lo), V / K region, S^ piece slot, scalars.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

constexpr int kBwdGlaThreads = 128;  // 4 warps: one m16 row slab each, full D-wide accumulators
constexpr int kBwdGlaChunk = 64;

// Two CTAs per SM (<= 113 KiB of dynamic smem each; 2 x 128 threads x <= 255 registers): one
// chunk's staging round trips overlap the other's products. S^ goes through a 64 x 64 piece slot
// (hi + lo, 16 KiB), (D/64)^2 pieces per product. Region A holds V and K (bf16 k, v, do: hi only,
// both resident) or V (hi + lo) for dk^S and then K (hi + lo) for dv.
template <int D>
struct BwdGlaSmem {
  static constexpr int kC = kBwdGlaChunk;
  static constexpr int kTileKD = kC * D * 2;  // one bf16 [C][D] tile
  static constexpr int kPiece = 64;
  static constexpr int kTileP = kPiece * kPiece * 2;
  static constexpr int kQ = 0;                   // Q~ hi, lo
  static constexpr int kO = kQ + 2 * kTileKD;    // dO hi, lo (lo unused when bf16)
  static constexpr int kA = kO + 2 * kTileKD;    // V hi, K hi (bf16) | V hi, lo, then K hi, lo
  static constexpr int kS = kA + 2 * kTileKD;    // one piece of S^, hi + lo
  static constexpr int kScal = kS + 2 * kTileP;
  // G, dG parts, end-term parts, block reduction slots
  static constexpr int kBytes = kScal + (3 * kC + 8) * 4;
  static_assert(kBytes <= 113 * 1024, "two CTAs per SM (228 KiB, 1 KiB reserved per CTA)");
};

namespace bwd_gla_detail {
GKA_DEVICE inline float4 load4(const float* p, int i) { return __ldg(reinterpret_cast<const float4*>(p) + i); }
GKA_DEVICE inline float4 load4(const __nv_bfloat16* p, int i) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(p) + i);
  return make_float4(tiling::bf16_lo(u.x), tiling::bf16_hi(u.x), tiling::bf16_lo(u.y), tiling::bf16_hi(u.y));
}
constexpr int kP = 64;  // S^ piece edge

// A 16-row accumulator slice's two rows (this lane's 2 columns of every n8 tile) to typed rows pa, pb.
template <int NT, class T>
GKA_DEVICE inline void store_acc_rows(T* pa, T* pb, bool va, bool vb, const float (&a)[NT][4]) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    if (va) gating::store2(pa + 8 * j, a[j][0], a[j][1]);
    if (vb) gating::store2(pb + 8 * j, a[j][2], a[j][3]);
  }
}

// The 64 x 64 piece (rows r0.., columns c0..) of S^ (fp32 or bf16) -> bf16 hi [+ lo] piece tiles
// (a bf16 S^ is exact: no lo); with kDot also adds this thread's part of <S^, S-bar> over the
// piece, from the same batch of loads. kCarry: plus factor * the segmented scans' carry of S^
// (kernels/backward_params.cuh: ChunkCarry), loaded in the same batch (the sum of a bf16 S^ and the
// carry is rounded to bf16 once more).
template <int D, int kThreads, bool kDot, bool kCarry, class TState, class TWs>
GKA_DEVICE inline void stage_shat_piece(const TWs* __restrict__ shat, const TState* __restrict__ sbar,
                                        const float* __restrict__ carry, float factor, int r0, int c0, uint8_t* hi,
                                        uint8_t* lo, int tid, float& part) {
  constexpr int kAll = kP * kP / 4 / kThreads;
  // runs while a D-wide accumulator is live: at most 8 float4 in flight per thread
  constexpr int kPer0 = kDot ? (kAll < 4 ? kAll : 4) : (kAll < 8 ? kAll : 8);
  constexpr int kPer = kCarry && kPer0 > 1 ? kPer0 / 2 : kPer0;
  static_assert(kAll % kPer == 0, "batches");
#pragma unroll 1
  for (int u0 = 0; u0 < kAll; u0 += kPer) {
  float4 sv[kPer], bv[kPer], cv[kPer];
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int q = tid + (u0 + u) * kThreads, row = q / (kP / 4), col = 4 * (q % (kP / 4));
    sv[u] = load4(shat + (r0 + row) * D + c0 + col, 0);
    if (kDot) bv[u] = load4(sbar + (r0 + row) * D + c0 + col, 0);
    if (kCarry) cv[u] = load4(carry + (r0 + row) * D + c0 + col, 0);
  }
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int q = tid + (u0 + u) * kThreads, row = q / (kP / 4), col = 4 * (q % (kP / 4));
    if (kCarry)
      sv[u] = make_float4(sv[u].x + factor * cv[u].x, sv[u].y + factor * cv[u].y, sv[u].z + factor * cv[u].z,
                          sv[u].w + factor * cv[u].w);
    if (kDot) part += sv[u].x * bv[u].x + sv[u].y * bv[u].y + sv[u].z * bv[u].z + sv[u].w * bv[u].w;
    uint32_t h0, l0, h1, l1;
    tiling::split_bf16(sv[u].x, sv[u].y, h0, l0);
    tiling::split_bf16(sv[u].z, sv[u].w, h1, l1);
    const uint32_t off = tiling::SwizzledTile<kP, kP>::offset(row, col);
    *reinterpret_cast<uint2*>(hi + off) = make_uint2(h0, h1);
    if constexpr (sizeof(TWs) == 4) *reinterpret_cast<uint2*>(lo + off) = make_uint2(l0, l1);
  }
  }
}

// Two consecutive elements (col, col + 1) of a token vector as floats (any input dtype).
GKA_DEVICE inline float2 token2(const TokenTensor& t, int64_t b, int64_t tok, int64_t head, int col) {
  const int64_t o = t.offset(b, tok, head) + col;
  switch (t.dtype) {
    case DType::kFP32: return *reinterpret_cast<const float2*>(static_cast<const float*>(t.data) + o);
    case DType::kFP16: return __half22float2(*reinterpret_cast<const __half2*>(static_cast<const __half*>(t.data) + o));
    case DType::kFP64: {
      const double* d = static_cast<const double*>(t.data) + o;
      return make_float2(static_cast<float>(d[0]), static_cast<float>(d[1]));
    }
    default: {
      const uint32_t u = *reinterpret_cast<const uint32_t*>(static_cast<const __nv_bfloat16*>(t.data) + o);
      return make_float2(tiling::bf16_lo(u), tiling::bf16_hi(u));
    }
  }
}
}  // namespace bwd_gla_detail

// kLo16: the lo parts of k, v, do (false: all three are bf16, exact; their lo tiles are neither
// staged nor multiplied, which leaves every result bitwise unchanged).
// kCarry: the chunk lies before the end of its run of a segmented scan (its S^ misses a carry).
template <int D, class TState, class TWs, bool kLo16, bool kCarry>
__device__ __forceinline__ void bwd_gla_body(const BackwardParams& p, const ChunkCarry& shat_carry, uint8_t* smem) {
  using Smem = BwdGlaSmem<D>;
  using namespace tiling;
  using namespace bwd_gla_detail;
  constexpr int C = kBwdGlaChunk;
  constexpr int NS = C / 8;  // n8 tiles of a warp's score rows
  constexpr int NT = D / 8;  // n8 tiles of the D columns
  constexpr int NQ = kP / 8, NP = D / kP;
  constexpr int kT = kBwdGlaThreads, kW = kT / 32;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, r = lane >> 2, c = lane & 3;
  const int slab = warp;  // rows 16 slab ..
  const int64_t cidx = blockIdx.x, h = blockIdx.y, hk = h / p.group;
  const ChunkEntry ce = p.geo.chunk_entry(cidx);
  if (ce.seq < 0) return;
  const int64_t b = p.geo.varlen ? 0 : ce.seq;
  const int len = ce.len;
  const int64_t t0 = ce.t0;
  const float s = p.scale;
  constexpr bool kShatLo = sizeof(TWs) == 4;  // a bf16 S^ is exact: no lo tile, no lo products
  const TWs* shat = static_cast<const TWs*>(p.ws.s_end) + (cidx * p.heads_q + h) * D * D;
  const float* carry = kCarry ? carry_ptr<D>(p, shat_carry, 1) : nullptr;
  const TState* sbar = static_cast<const TState*>(p.states_s) + (cidx * p.heads_q + h) * D * D;

  uint8_t* s_hi = smem + Smem::kS;
  uint8_t* s_lo = s_hi + Smem::kTileP;
  float part = 0.f;  // <S^, S-bar_n>: fixed-order partial sums (deterministic)
  // S^'s piece (r0, c0) into the slot [with its part of <S^, S-bar_n>]
  auto stage_shat = [&](auto dot, int r0, int c0) {
    stage_shat_piece<D, kT, decltype(dot)::value, kCarry>(shat, sbar, carry, shat_carry.factor, r0, c0, s_hi, s_lo,
                                                          tid, part);
  };
  uint8_t* q_hi = smem + Smem::kQ;
  uint8_t* o_hi = smem + Smem::kO;
  uint8_t* v_hi = smem + Smem::kA;  // V hi, then (kLo16) V lo; K after V (kLo16) or beside it
  uint8_t* k_hi = kLo16 ? v_hi : v_hi + Smem::kTileKD;
  float* G = reinterpret_cast<float*>(smem + Smem::kScal);
  float* dG = G + C;         // k_j . dk^S_j
  float* e_row = dG + C;     // e^{G_C' - G_j} k_j^T S^ v_j
  float* red = e_row + C;

  if (warp == 0) {
    for (int t = lane; t < C; t += 32) G[t] = t < len ? p.gate_s.at(b, t0 + t, h) : 0.f;
    __syncwarp();
    gating::warp_cumsum64(G, len, lane);
  }
  // S^'s first piece (and its part of <S^, S-bar_n>), the token tiles
  stage_shat(std::true_type{}, 0, 0);
  if constexpr (kLo16) {
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

  const SplitTile tS{smem_addr(s_hi), smem_addr(s_lo)};
  const SplitTile tK{smem_addr(k_hi), smem_addr(k_hi + Smem::kTileKD)};
  const SplitTile tV{smem_addr(v_hi), smem_addr(v_hi + Smem::kTileKD)};
  const SplitTile tQ{smem_addr(q_hi), smem_addr(q_hi + Smem::kTileKD)};
  const SplitTile tO{smem_addr(o_hi), smem_addr(o_hi + Smem::kTileKD)};
  const int m0 = 16 * slab, ja = m0 + r, jb = ja + 8;
  const float gend = G[len - 1];
  // e^{G_C' - G_j}, 0 on padded rows
  const float dec_a = ja < len ? expf(gend - G[ja]) : 0.f, dec_b = jb < len ? expf(gend - G[jb]) : 0.f;

  auto row_scale = [&](float (&a)[NT][4]) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
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
  // k_j . a_j for rows ja, jb, reduced over the quad: k as staged (bf16: exact), or, while V holds
  // region A (kLo16), k read from global memory (the unrounded input)
  auto kdot = [&](const float (&a)[NT][4], float& da, float& db) {
    da = 0.f;
    db = 0.f;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int col = 8 * j + 2 * c;
      if constexpr (kLo16) {
        const float2 ka = ja < len ? token2(p.k, b, t0 + ja, hk, col) : make_float2(0.f, 0.f);
        const float2 kb = jb < len ? token2(p.k, b, t0 + jb, hk, col) : make_float2(0.f, 0.f);
        da += ka.x * a[j][0] + ka.y * a[j][1];
        db += kb.x * a[j][2] + kb.y * a[j][3];
      } else {
        const uint32_t ha = *reinterpret_cast<const uint32_t*>(k_hi + SwizzledTile<D, C>::offset(ja, col));
        const uint32_t hb = *reinterpret_cast<const uint32_t*>(k_hi + SwizzledTile<D, C>::offset(jb, col));
        da += bf16_lo(ha) * a[j][0] + bf16_hi(ha) * a[j][1];
        db += bf16_lo(hb) * a[j][2] + bf16_hi(hb) * a[j][3];
      }
    }
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
      da += __shfl_xor_sync(0xffffffffu, da, o);
      db += __shfl_xor_sync(0xffffffffu, db, o);
    }
  };
  // rows ja, jb of an fp32 workspace array
  auto store_rows = [&](const TokenTensor& out, const float (&a)[NT][4]) {
    float* base = static_cast<float*>(out.data);
    store_acc_rows(base + out.offset(b, t0 + ja, h) + 2 * c, base + out.offset(b, t0 + jb, h) + 2 * c, ja < len,
                   jb < len, a);
  };

  float acc[NT][4];
  float sc[NS][4];
  uint32_t ah[C / 16][4], al[C / 16][4];

  // ---- dk^S -------------------------------------------------------------------------------------
  // sum_val S^[key][val] v_j[val], piece by piece (rows: output keys rh, columns: k-steps ch);
  // piece 0 is staged, every later one after the previous is consumed
  zero_acc(acc);
#pragma unroll  // acc's indices stay compile-time
  for (int rh = 0; rh < NP; ++rh)
#pragma unroll 1
    for (int ch = 0; ch < NP; ++ch) {
      gemm_nk2_kpiece<kP, D, C, kP, kP, NQ, kLo16, kShatLo>(*reinterpret_cast<float(*)[NQ][4]>(&acc[rh * NQ][0]), tV,
                                                         tS, m0, kP * ch, 0, lane);
      __syncthreads();
      const int q = rh * NP + ch + 1;
      if (q < NP * NP) {
        stage_shat(std::true_type{}, kP * (q / NP), kP * (q % NP));
        __syncthreads();
      }
    }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
  if (lane == 0) red[warp] = part;
  // S^'s first piece again (for dv; the slot is free; with one piece it is still there)
  if constexpr (NP > 1) stage_shat(std::false_type{}, 0, 0);
  row_scale(acc);
  {
    float ea, eb;  // the end term's per-token parts
    kdot(acc, ea, eb);
    if (c == 0) {
      e_row[ja] = ea;
      e_row[jb] = eb;
    }
  }
  // the mask keeps i >= j: the slab's rows need score columns / k-steps >= 16 slab only
  zero_acc(sc);
  gemm_nk2<D, C, D, C, NS, kLo16, kLo16>(sc, tV, tO, m0, 0, lane, slab);  // v_j . do_i
  mask_split(sc, ah, al);
  gemm_rkn2<C, D, C, NT, true, true>(acc, ah, al, tQ, 0, lane, slab);  // + sum_i M_ji q~_i
  store_rows(p.ws.dk, acc);
  {
    float da, db;
    kdot(acc, da, db);
    if (c == 0) {
      dG[ja] = da;
      dG[jb] = db;
    }
  }
  if constexpr (kLo16) {  // K takes region A from V
    __syncthreads();
    stage_token_tile<C, D, kT, true>(p.k, b, t0, hk, len, nullptr, k_hi, k_hi + Smem::kTileKD, tid);
  }
  __syncthreads();  // S^'s first piece (and K) visible

  // ---- dv ---------------------------------------------------------------------------------------
  // sum_key k_j[key] S^[key][val], piece by piece (rows: k-steps rh, columns: output values ch)
  zero_acc(acc);
#pragma unroll 1
  for (int rh = 0; rh < NP; ++rh)
#pragma unroll
    for (int ch = 0; ch < NP; ++ch) {
      gemm_kn2_kpiece<kP, D, C, kP, kP, NQ, kLo16, kShatLo>(*reinterpret_cast<float(*)[NQ][4]>(&acc[ch * NQ][0]), tK,
                                                         tS, m0, kP * rh, 0, lane);
      __syncthreads();
      const int q = rh * NP + ch + 1;
      if (q < NP * NP) {
        stage_shat(std::false_type{}, kP * (q / NP), kP * (q % NP));
        __syncthreads();
      }
    }
  row_scale(acc);
  zero_acc(sc);
  gemm_nk2<D, C, D, C, NS, kLo16, true>(sc, tK, tQ, m0, 0, lane, slab);  // k_j . q~_i
  mask_split(sc, ah, al);
  gemm_rkn2<C, D, C, NT, true, kLo16>(acc, ah, al, tO, 0, lane, slab);  // + sum_i M_ji do_i
  if (!p.direct_dkv) {
    store_rows(p.ws.dv, acc);
  } else {  // group == 1: the output itself, one dtype dispatch outside the stores
    const int64_t oa = p.dv_out.offset(b, t0 + ja, h) + 2 * c, ob = p.dv_out.offset(b, t0 + jb, h) + 2 * c;
    void* base = p.dv_out.data;
    if (p.dv_out.dtype == DType::kBF16)
      store_acc_rows(static_cast<__nv_bfloat16*>(base) + oa, static_cast<__nv_bfloat16*>(base) + ob, ja < len, jb < len, acc);
    else if (p.dv_out.dtype == DType::kFP16)
      store_acc_rows(static_cast<__half*>(base) + oa, static_cast<__half*>(base) + ob, ja < len, jb < len, acc);
    else
      store_acc_rows(static_cast<float*>(base) + oa, static_cast<float*>(base) + ob, ja < len, jb < len, acc);
  }

  // ---- dG: end term at C', chunk-local reverse cumsum (one warp, fixed order) ---------------------
  __syncthreads();  // dG, e_row visible; G no longer read
  if (warp == 0) {
    float e = 0.f;  // sum of the per-token end parts
    for (int i = lane; i < len; i += 32) e += e_row[i];
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
      G[t] = t < len ? qdq[p.ws.qdq.offset(b, t0 + j, h)] - dG[j] : 0.f;
    }
    __syncwarp();
    gating::warp_cumsum64(G, len, lane);  // G[t] = sum_{l >= len-1-t} dG_l
    __syncwarp();
    for (int j = lane; j < len; j += 32)
      static_cast<float*>(p.ws.dg_s.data)[p.ws.dg_s.offset(b, t0 + j, h)] = end + G[len - 1 - j];
  }
}

// TState: the forward's S-bar; TWs: S^ as the reverse scan stored it (fp32, or bf16). kCarry: this
// launch covers the chunks whose S^ misses a segmented scan's carry (a second launch, only with
// segments; each launch's other chunks exit at once). Two kernels rather than a choice per CTA: a
// CTA of one then shares its SM only with CTAs running the same code (one copy in the instruction
// cache; mixed, the carried chunks took 1.5x as long, H200, commit 20726c3).
template <int D, class TState, class TWs = float, bool kCarry = false>
__global__ void __launch_bounds__(kBwdGlaThreads, 2) bwd_gla_kernel(BackwardParams p) {
  extern __shared__ __align__(1024) uint8_t smem[];
  // the chunks of the other launch exit (kCarry: those whose S^ misses a segment carry)
  ChunkCarry cc;
  if (p.seg.count > 1) {  // without segments nothing to look up: the one launch runs every chunk
    const tiling::ChunkEntry ce = p.geo.chunk_entry(blockIdx.x);
    if (ce.seq >= 0) cc = chunk_carry<D>(p, blockIdx.x, ce, blockIdx.y, true);
  }
  if ((cc.index >= 0) != kCarry) return;
  if (p.k.dtype == DType::kBF16 && p.v.dtype == DType::kBF16 && p.d_o.dtype == DType::kBF16)
    bwd_gla_body<D, TState, TWs, false, kCarry>(p, cc, smem);
  else
    bwd_gla_body<D, TState, TWs, true, kCarry>(p, cc, smem);
}

}  // namespace kernels
GKA_NAMESPACE_END
