// gka/kernels/decode_kernel.cuh: the decode step over a state pool (spec 5, 12.10): for each
// (sequence, head), m >= 0 new tokens advanced token by token from the pool's H and S.
//
// One CTA of 2D threads (D / 16 warps: 8 at D = 128) per (sequence, head); grid = num_seqs * H_q.
//  * H (fp32) lives in registers for the whole call: warp w owns rows 16w..16w+15, lane l columns
//    kC*l..kC*l+kC-1 (kC = D / 32, 64 floats per lane at D = 128), so every row load and store is
//    one coalesced 16- or 8-byte access per lane.
//  * H is symmetric (prefill and every update keep it so), so (H xi)_c = sum_r H[r][c] xi_r: a warp
//    multiplies its own rows by the xi of those same rows and produces partial sums for every
//    column. The partials of all warps meet in shared memory; after ONE __syncthreads lanes l and
//    l + 16 of warp w both sum all kWarps partials of row 16w + (l & 15) (broadcast loads, no
//    shuffle round trip) and keep identical copies of its xi; those rows are again the rows that
//    warp multiplies next. The new xi goes to a per-row shared array (xs) that only the owning
//    warp reads (after a __syncwarp, as 4 broadcast LDS.128) - no broadcast shuffles.
//  * 8 warps of 16 rows (16 warps of 8 rows were slower: more shuffles and shared accesses per
//    iteration). The FFMAs run as 2 x kC independent chains of 8 (rows 0-7 and 8-15 in separate
//    accumulators); the 16K FFMAs of one matvec take >= 128 issue cycles on one SM, and with the
//    dependent shared round trips (xi read, partial store, barrier, gather) one iteration
//    measures ~400 cycles (H200, N = 1: 30 more iterations cost 6.1 us). 256 threads x <= 128
//    registers leave room for two CTAs per SM (one CTA's loads overlap the other's solve).
//  * The Chebyshev coefficients omega_i (spec 2.3: one table for every token) are computed once
//    per CTA into shared memory (the first 64; beyond that the recurrence continues in the loop),
//    so no division sits in the loop; the update is one FFMA after the gather: xi <- c - eta omega e
//    with c = omega xi - (eta omega (lambda xi - q) + (omega - 1) xi_prev) formed before the barrier.
//  * Prologue, in the order the data is needed: the token inputs (they do not depend on the slot),
//    then H (registers), every load issued before any is waited for (the split kernel issues the
//    slot load first); S follows (below). At N = 1 every CTA runs this code
//    once from a cold instruction cache, so its length is latency: each thread fetches one input
//    item (a pair of q / k / v elements or one per-token scalar) through one short path. With two
//    items per thread through the general element path, ~1.8 us passed before the slot index was
//    known (docs/gpu-decode.md, round 5).
//  * S is kept in shared memory as fp32 (64 KiB at D = 128), each element read and written by one
//    thread only, so it needs no barrier. It is first needed by the read-out after the solve, so
//    its copy (fp32 pools: cp.async, issued after the first H update) completes under the solve; the read-out forms S_new = gamma S + k v^T
//    for o = s S_new^T q~ and stores it to the pool (last token) or back to the tile (earlier
//    tokens). Storing S_new before the solve (so that the stores drain under it) was measured
//    slower: the solve then waits for the S load (N = 64: 111 vs 104 us).
//  * Final H is stored right after the last update (the stores drain during the last solve).
//    Per-token states go to inter_h / inter_s when requested (separate loops, so that the common
//    path stays short: at N = 1 the code runs once from a cold instruction cache).
//  * Global stores are explicit vector stores (stg_vec): plain float4 assignments were split into 4
//    scalar stores here (4x the store instructions, quarter-sector writes; with the prologue order
//    above: N = 1 20.5 -> 16.8 us, N = 64 126 -> 104 us).
//  * Small grids (2 N H_q <= SMs, sm_90): a cluster of two CTAs per (sequence, head), kSplit. The
//    solver (rank 0) loads H, updates it and solves; the state CTA (rank 1) loads H and S, updates
//    and stores both (the same arithmetic: results are bitwise those of one CTA) and forms o once
//    q~ arrives in its shared memory (one st.shared::cluster per row; the cluster barrier orders
//    it). The solver's path then holds no state store and no read-out (N = 1, m = 1: 16.3 -> 15.6
//    us; with the short input path and the folded update 14.0 - 14.4 us; docs/gpu-decode.md).
// Semantics as the float64 reference (gka::reference::decode): nu = 0 gives x = 0; num_iter = 0
// gives x = q; f absent means f = g; g absent means no decay; fused L2 norm (eps 1e-6) and beta.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/solver/chebyshev_schedule.h"
#include "gka/tiling/cluster.cuh"
#include "gka/tiling/copy.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

struct DecodeParams {
  int64_t heads_q = 0, group = 1;
  int64_t seqlen = 0;                 // m per sequence (uniform), or the packed total (varlen)
  const void* cu_seqlens = nullptr;   // [num_seqs + 1] or null (uniform)
  IndexType cu_type = IndexType::kInt32;
  TokenTensor q, k, v, alpha, beta, o;
  gating::Gate gate_h, gate_s;
  bool l2norm_qk = false, use_beta = false;
  int num_iter = 30;
  float ridge = 0.02f, scale = 1.f;
  StateTensor pool_h, pool_s;
  const void* read_slots = nullptr;
  const void* write_slots = nullptr;  // null: read_slots
  IndexType slot_type = IndexType::kInt32;
  int64_t pad_slot = -1;
  const uint8_t* has_initial_state = nullptr;
  StateTensor inter_h, inter_s;       // optional [total tokens, H_q, D, D] fp32
};

GKA_DEVICE inline int64_t load_index(const void* p, IndexType t, int64_t i) {
  return t == IndexType::kInt64 ? static_cast<const int64_t*>(p)[i]
                                : static_cast<int64_t>(static_cast<const int32_t*>(p)[i]);
}

template <int D>
struct DecodeGeometry {
  static constexpr int kRows = 16;               // state rows per warp
  static constexpr int kWarps = D / kRows;       // 8 at D = 128, 4 at D = 64
  static constexpr int kThreads = 32 * kWarps;   // 2D
  static constexpr int kC = D / 32;              // columns per lane
  static constexpr int kTab = 64;                // omega_i precomputed for i < kTab
  static constexpr int kIn = 3 * D + 4;          // q, k, v elements and 4 per-token scalars
  static constexpr int kPairs = 3 * D / 2;       // input items: pairs of q, k, v elements, then 4 scalars
  static_assert(kPairs + 4 <= kThreads, "one input item per thread");
};

template <int D>
struct DecodeSmem {
  using G = DecodeGeometry<D>;
  float s_tile[D * D];                       // S in fp32, element (r, c) owned by one thread
  float part[2][G::kWarps][D];               // H xi partials, double-buffered across iterations
  float opart[G::kWarps][D];                 // S^T q~ partials
  alignas(16) float in[G::kIn];              // raw q, k, v of the current token; alpha, e^f, e^g, beta
  alignas(16) float xs[D];                   // xi by row (read only by the owning warp)
  alignas(16) float qts[D];                  // q~ by row (read only by the owning warp)
  alignas(16) float qts_in[2][D];            // kSplit, state CTA: q~ stored by the solver CTA, by token parity
  float red[G::kWarps];                      // per-warp sums of squares of H
  float omega[G::kTab], omega_m1[G::kTab];   // omega_i, omega_i - 1
};

// The input item thread i fetches per token: for i < kPairs the elements 2i, 2i + 1 of q, k, v
// (concatenated), else the per-token scalar i - kPairs (alpha, f, g, beta). One item per thread
// keeps this code short: at small N every CTA runs the prologue once from a cold instruction cache.
struct DecodeInput {
  const uint8_t* base = nullptr;  // the item at token t0; null: absent input
  int64_t stride = 0;             // bytes per token
  DType type = DType::kFP32;
  bool pair = false;
  float absent = 0.f;             // value of an absent input (alpha = 1; gates and beta 0)
  // the raw values (a gate's log-decay: the exponential is taken when the value is used, so that a
  // prefetch does not wait for its load); .y is 0 for a scalar
  GKA_DEVICE float2 fetch(int64_t j) const {
    if (base == nullptr) return make_float2(absent, 0.f);
    const uint8_t* at = base + j * stride;
    if (!pair) return make_float2(gating::load_as_float(at, type, 0), 0.f);
    if (type == DType::kBF16) return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(at));
    if (type == DType::kFP16) return __half22float2(*reinterpret_cast<const __half2*>(at));
    return *reinterpret_cast<const float2*>(at);  // 8-byte aligned: rows are 16-byte aligned
  }
};
template <int D>
GKA_DEVICE inline DecodeInput make_input(const DecodeParams& p, int item, int64_t b, int64_t t0, int64_t h,
                                         int64_t hk) {
  using G = DecodeGeometry<D>;
  DecodeInput in;
  in.pair = item < G::kPairs;
  const int which = in.pair ? 2 * item / D : 3, elem = in.pair ? 2 * item % D : item - G::kPairs;
  // selected by value: a pointer into the kernel parameters would copy them to local memory
  const TokenTensor x = which == 0 ? p.q : which == 1 ? p.k : which == 2 ? p.v
                      : elem == 0 ? p.alpha : (elem == 3 && p.use_beta) ? p.beta : TokenTensor{};
  if (!in.pair && elem == 0) in.absent = 1.f;
  if (x.data != nullptr) {
    const int64_t head = which == 1 || which == 2 ? hk : h;
    in.base = static_cast<const uint8_t*>(x.data) + (x.offset(b, t0, head) + (in.pair ? elem : 0)) * dtype_size(x.dtype);
    in.stride = x.stride_token * dtype_size(x.dtype);
    in.type = x.dtype;
  } else if (!in.pair && (elem == 1 || elem == 2)) {
    const gating::Gate g = elem == 1 ? p.gate_h : p.gate_s;
    if (g.data != nullptr) {
      in.base = reinterpret_cast<const uint8_t*>(g.data + b * g.stride_batch + t0 * g.stride_token + h * g.stride_head);
      in.stride = g.stride_token * 4;
    }
  }
  return in;
}

// kC consecutive floats (8 or 16 bytes, aligned by the validation's 16-byte rule).
template <int kC>
struct Vec {
  float x[kC];
};
template <int kC>
GKA_DEVICE inline Vec<kC> ld_vec(const float* p) {
  Vec<kC> v;
  if constexpr (kC == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    v.x[0] = t.x; v.x[1] = t.y; v.x[2] = t.z; v.x[3] = t.w;
  } else {
    const float2 t = *reinterpret_cast<const float2*>(p);
    v.x[0] = t.x; v.x[1] = t.y;
  }
  return v;
}
template <int kC>
GKA_DEVICE inline void st_vec(float* p, const float (&x)[kC]) {
  if constexpr (kC == 4) *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
  else *reinterpret_cast<float2*>(p) = make_float2(x[0], x[1]);
}
// kC consecutive floats to global memory as one vector store (a plain float4 assignment was split
// into 4 scalar stores by the compiler here: 4x the store instructions and quarter-sector writes).
template <int kC>
GKA_DEVICE inline void stg_vec(float* p, const float (&x)[kC]) {
  if constexpr (kC == 4) __stwb(reinterpret_cast<float4*>(p), make_float4(x[0], x[1], x[2], x[3]));
  else __stwb(reinterpret_cast<float2*>(p), make_float2(x[0], x[1]));
}
// kC elements of a state row in the pool's S dtype.
template <class TS, int kC>
GKA_DEVICE inline Vec<kC> ld_state(const TS* p) {
  if constexpr (sizeof(TS) == 4) {
    return ld_vec<kC>(reinterpret_cast<const float*>(p));
  } else {
    Vec<kC> v;
#pragma unroll
    for (int i = 0; i < kC; i += 2) {
      const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p + i));
      v.x[i] = f.x;
      v.x[i + 1] = f.y;
    }
    return v;
  }
}
template <class TS, int kC>
GKA_DEVICE inline void st_state(TS* p, const float (&x)[kC]) {
  if constexpr (sizeof(TS) == 4) {
    stg_vec<kC>(reinterpret_cast<float*>(p), x);
  } else {
#pragma unroll
    for (int i = 0; i < kC; i += 2) gating::store2<__nv_bfloat16>(p + i, x[i], x[i + 1]);
  }
}

// 16 consecutive floats of shared memory (16-byte aligned) into registers, as 4 LDS.128.
GKA_DEVICE inline void ld16(const float* p, float (&x)[16]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float4 t = reinterpret_cast<const float4*>(p)[i];
    x[4 * i] = t.x; x[4 * i + 1] = t.y; x[4 * i + 2] = t.z; x[4 * i + 3] = t.w;
  }
}

// TS: element type of the pool's S (float or __nv_bfloat16). kMinBlocks: CTAs per SM the register
// allocation must allow (2 at D = 128 caps it at 128 registers per thread; see docs/gpu-decode.md).
// kSplit (sm_90, launched as clusters of 2 CTAs per (sequence, head)): cluster rank 0, the solver,
// keeps H and runs the solve, and stores q~ into rank 1's shared memory; rank 1, the state CTA,
// advances H and S, stores them, and forms o once q~ has arrived. The solver's critical path then
// holds neither the state stores nor the read-out (for grids that leave most SMs idle).
template <int D, class TS, int kMinBlocks, bool kSplit = false>
__global__ void __launch_bounds__(DecodeGeometry<D>::kThreads, kMinBlocks) decode_kernel(DecodeParams p) {
  using G = DecodeGeometry<D>;
  constexpr int kC = G::kC, kR = G::kRows;
  constexpr bool kAsyncS = sizeof(TS) == 4 && kC == 4;
  extern __shared__ __align__(128) uint8_t smem_raw[];
  DecodeSmem<D>& sm = *reinterpret_cast<DecodeSmem<D>*>(smem_raw);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t task = kSplit ? blockIdx.x / 2 : blockIdx.x;
  const bool solver = !kSplit || blockIdx.x % 2 == 0;  // runs the solve
  const bool keeper = !kSplit || !solver;              // advances and stores the states, forms o
  const int64_t seq = task / p.heads_q, h = task % p.heads_q, hk = h / p.group;
  int64_t b = seq, t0 = 0, len = p.seqlen;
  if (p.cu_seqlens) {
    b = 0;
    t0 = load_index(p.cu_seqlens, p.cu_type, seq);
    len = load_index(p.cu_seqlens, p.cu_type, seq + 1) - t0;
  }
  const int row0 = kR * warp;    // first of this warp's 16 state rows
  const int col0 = kC * lane;    // first of this lane's kC columns

  // ---- prologue, in the order the data is needed, every load issued before any is waited for:
  // the slot index, input item tid of token 0 (it does not depend on the slot) -> registers,
  // H -> registers, S -> shared (fp32). Token j + 1's item is fetched into `pre` while token j is
  // processed; the DecodeInput is rebuilt from the kernel parameters for each fetch rather than
  // held across the solve (registers).
  int64_t read = 0;
  if constexpr (kSplit) read = load_index(p.read_slots, p.slot_type, seq);
  const bool loads_input = tid < G::kPairs + 4;
  float2 pre = make_float2(0.f, 0.f);
  if (loads_input && len > 0) pre = make_input<D>(p, tid, b, t0, h, hk).fetch(0);
  if constexpr (!kSplit) read = load_index(p.read_slots, p.slot_type, seq);
  if (read == p.pad_slot) return;  // padded request: nothing read, nothing written
  const int64_t write = p.write_slots ? load_index(p.write_slots, p.slot_type, seq) : read;
  const bool store_final = write != p.pad_slot;
  const bool from_pool = p.has_initial_state == nullptr || p.has_initial_state[seq] != 0;
  TS* const s_pool = static_cast<TS*>(p.pool_s.data);
  float* const h_pool = static_cast<float*>(p.pool_h.data);
  float H[kR][kC];
#pragma unroll
  for (int j = 0; j < kR; ++j) {
    Vec<kC> v{};
    if (from_pool) v = ld_vec<kC>(h_pool + p.pool_h.offset(read, h) + (row0 + j) * p.pool_h.stride_row + col0);
#pragma unroll
    for (int i = 0; i < kC; ++i) H[j][i] = v.x[i];
  }
  // fp32 S: 16-byte cp.async pieces, no registers held. Without the split they are issued once
  // the first token's H update is done, so that a wave of CTAs first loads only H and starts
  // solving sooner; S has the solve to arrive (N = 64: 105.7 -> 98.5 us).
  constexpr bool kLateS = kAsyncS && !kSplit;
  auto copy_s = [&] {
#pragma unroll
    for (int j = 0; j < kR; ++j) {
      const float* src = reinterpret_cast<const float*>(s_pool) + p.pool_s.offset(read, h) +
                         (row0 + j) * p.pool_s.stride_row + col0;
      tiling::cp_async_16(&sm.s_tile[(row0 + j) * D + col0], src, from_pool);
    }
    tiling::cp_async_commit();
  };
  if (keeper) {  // the solver of a split pair never touches S
    if constexpr (kAsyncS) {
      if constexpr (!kLateS) copy_s();
    } else {
#pragma unroll
      for (int j = 0; j < kR; ++j) {
        Vec<kC> v{};
        if (from_pool) v = ld_state<TS, kC>(s_pool + p.pool_s.offset(read, h) + (row0 + j) * p.pool_s.stride_row + col0);
        st_vec<kC>(&sm.s_tile[(row0 + j) * D + col0], v.x);
      }
    }
  }
  // kSplit: cluster barrier phase 0 says both CTAs run (before any store into the other's shared
  // memory); phase j + 1 says q~ of token j is in the state CTA's qts_in[j & 1] and that the state
  // CTA is done with token j - 1's. Every thread arrives and waits once per phase, in turn.
  if constexpr (kSplit) {
    tiling::cluster_arrive_relaxed();  // relaxed: a release would wait here for the loads above
    if (keeper) tiling::cluster_wait();
  }

  const float cheb_c = chebyshev_c<float>(p.ridge);
  const int n_tab = p.num_iter < G::kTab ? p.num_iter : G::kTab;
  if (tid == G::kThreads - 1) {  // one table for every token (spec 2.3); made while the loads fly
    float om = chebyshev_omega0<float>();
    for (int i = 0; i < n_tab; ++i) {
      om = chebyshev_next_omega(cheb_c, om);
      sm.omega[i] = om;
      sm.omega_m1[i] = om - 1.f;
    }
  }

  const int gj = lane & 15, gh = lane >> 4;  // gather role: row row0 + gj (lanes gj, gj + 16: identical copies)
  auto store_h = [&](const StateTensor& dst, int64_t n) {
    float* out = static_cast<float*>(dst.data) + dst.offset(n, h);
#pragma unroll
    for (int j = 0; j < kR; ++j) stg_vec<kC>(out + (row0 + j) * dst.stride_row + col0, H[j]);
  };
  if (len == 0 && store_final && keeper) store_h(p.pool_h, write);

  for (int64_t j = 0; j < len; ++j) {
    const int64_t t = t0 + j;
    const bool last = j + 1 == len;
    if (tid < G::kPairs) {
      sm.in[2 * tid] = pre.x;
      sm.in[2 * tid + 1] = pre.y;
    } else if (loads_input) {
      const int s = tid - G::kPairs;
      sm.in[3 * D + s] = s == 1 || s == 2 ? expf(pre.x) : pre.x;  // gates: e^f, e^g
    }
    if (loads_input && !last) pre = make_input<D>(p, tid, b, t0, h, hk).fetch(j + 1);
    __syncthreads();  // (A) token inputs visible
    if constexpr (kSplit) {
      if (keeper) tiling::cluster_arrive();  // phase j + 1: done with q~ of token j - 1
    }
    const float* qin = sm.in;
    const float* kin = sm.in + D;
    const float* vin = sm.in + 2 * D;
    const float* scal = sm.in + 3 * D;

    // fused input transforms as per-token scales (every warp computes them; no extra barrier)
    const float beta = scal[3];
    float ssq = 0.f, ssk = 0.f;
    if (p.l2norm_qk) {
#pragma unroll
      for (int i = 0; i < kC; ++i) {
        const float a = qin[col0 + i], c = kin[col0 + i];
        ssq += a * a;
        ssk += c * c;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        ssq += __shfl_xor_sync(0xffffffffu, ssq, o);
        ssk += __shfl_xor_sync(0xffffffffu, ssk, o);
      }
    }
    const float ks = gating::fused_scale(p.l2norm_qk, ssk, p.use_beta, beta);
    const float qs = gating::fused_scale(p.l2norm_qk, ssq, false, 0.f);
    const float vs = gating::fused_scale(false, 0.f, p.use_beta, beta);

    // H <- gamma_h H + k k^T, and this thread's share of ||H||_F^2 (kC independent chains)
    const float gamma_h = scal[1], gamma_s = scal[2];
    // k of this warp's rows and k, v of this lane's columns, scaled (formed again after the solve
    // rather than held across it: registers)
    auto scaled_kv = [&](float (&kr)[kR], float (&kc)[kC], float (&vc)[kC]) {
      ld16(kin + row0, kr);
#pragma unroll
      for (int r = 0; r < kR; ++r) kr[r] *= ks;
#pragma unroll
      for (int i = 0; i < kC; ++i) {
        kc[i] = kin[col0 + i] * ks;
        vc[i] = vin[col0 + i] * vs;
      }
    };
    float kc[kC], vc[kC], kr[kR];
    scaled_kv(kr, kc, vc);
    float ssv[kC];
#pragma unroll
    for (int i = 0; i < kC; ++i) ssv[i] = 0.f;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
#pragma unroll
      for (int i = 0; i < kC; ++i) {
        H[r][i] = fmaf(gamma_h, H[r][i], kr[r] * kc[i]);
        ssv[i] = fmaf(H[r][i], H[r][i], ssv[i]);
      }
    }
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < kC; ++i) ss += ssv[i];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (lane == 0) sm.red[warp] = ss;
    if (p.inter_h.data && keeper) store_h(p.inter_h, b * p.seqlen + t);
    if (last && store_final && keeper) store_h(p.pool_h, write);
    if constexpr (kLateS) {
      if (j == 0) copy_s();
    }

    if (solver) {
      __syncthreads();  // (B) sums of squares visible
      float nu2 = 0.f;
#pragma unroll
      for (int w = 0; w < G::kWarps; ++w) nu2 += sm.red[w];
      const float nu = sqrtf(nu2);

      // Chebyshev solve (spec 2.3). Lanes gj and gj + 16 own row row0 + gj (identical copies).
      const float qr = qin[row0 + gj] * qs;
      float x;
      if (p.num_iter == 0) {
        x = qr;  // no solve (spec 12.1)
      } else if (!(nu > 0.f)) {
        x = 0.f;  // nu = 0 guard (spec 12.4)
      } else {
        const float lambda = p.ridge * nu;
        const float eta = chebyshev_eta<float>(p.ridge, nu);
        float xi = eta * qr, xi_prev = 0.f;
        float* const xs = sm.xs + row0;
        if (gh == 0) xs[gj] = xi;
        auto step = [&](int it, float omega, float omega_m1) {
          __syncwarp();  // xs of this warp's rows written
          float xr[kR];
          ld16(xs, xr);
          float a0[kC], a1[kC];
#pragma unroll
          for (int i = 0; i < kC; ++i) {
            a0[i] = H[0][i] * xr[0];
            a1[i] = H[kR / 2][i] * xr[kR / 2];
          }
#pragma unroll
          for (int r = 1; r < kR / 2; ++r) {
#pragma unroll
            for (int i = 0; i < kC; ++i) {
              a0[i] = fmaf(H[r][i], xr[r], a0[i]);
              a1[i] = fmaf(H[r + kR / 2][i], xr[r + kR / 2], a1[i]);
            }
          }
          float part[kC];
#pragma unroll
          for (int i = 0; i < kC; ++i) part[i] = a0[i] + a1[i];
          float(*buf)[D] = sm.part[it & 1];
          st_vec<kC>(&buf[warp][col0], part);
          // xi <- omega xi - delta, delta = eta omega ((H + lambda I) xi - q) + (omega - 1) xi_prev,
          // as c - eta omega e with everything but e = (H xi)_row formed before the barrier
          const float eo = eta * omega;
          const float c = fmaf(omega, xi, -fmaf(eo, fmaf(lambda, xi, -qr), omega_m1 * xi_prev));
          __syncthreads();
          float pw[G::kWarps];  // every lane sums all partials of its row: no shuffle round trip
#pragma unroll
          for (int w = 0; w < G::kWarps; ++w) pw[w] = buf[w][row0 + gj];
#pragma unroll
          for (int n = G::kWarps / 2; n > 0; n /= 2)
#pragma unroll
            for (int w = 0; w < n; ++w) pw[w] += pw[w + n];
          xi_prev = xi;
          xi = fmaf(-eo, pw[0], c);
          if (gh == 0) xs[gj] = xi;
        };
        for (int it = 0; it < n_tab; ++it) step(it, sm.omega[it], sm.omega_m1[it]);
        if (p.num_iter > G::kTab) {  // the rest of the recurrence, in the loop
          float om = sm.omega[G::kTab - 1];
          for (int it = G::kTab; it < p.num_iter; ++it) {
            om = chebyshev_next_omega(cheb_c, om);
            step(it, om, om - 1.f);
          }
        }
        x = xi;
      }
      const float alpha = scal[0];
      const float qt = fmaf(alpha, x - qr, qr);  // q~ = q + alpha (x - q)
      if constexpr (kSplit) {  // q~ to the state CTA; this CTA is done with token j
        __syncthreads();  // token inputs free for the next token (the state CTA's (C))
        tiling::cluster_wait();  // phase j: the state CTA runs and is done with qts_in[j & 1]
        if (gh == 0) tiling::store_shared_rank(&sm.qts_in[j & 1][row0 + gj], 1, qt);
        tiling::cluster_arrive();  // phase j + 1
        continue;
      }
      if (gh == 0) sm.qts[row0 + gj] = qt;
    }

    // S_new = gamma_s S + k v^T; o partials sum_r S_new[r][c] q~_r over this warp's rows (kSplit:
    // S_new first, back to the tile, and o once q~ has arrived)
    if constexpr (kAsyncS) {
      if (j == 0) tiling::cp_async_wait<0>();
    }
    float qtr[kR];
    if constexpr (!kSplit) {
      __syncwarp();  // qts of this warp's rows written
      ld16(sm.qts + row0, qtr);
    }
    scaled_kv(kr, kc, vc);
    TS* const s_out = s_pool + p.pool_s.offset(write, h) + row0 * p.pool_s.stride_row + col0;
    float op[kC];
#pragma unroll
    for (int i = 0; i < kC; ++i) op[i] = 0.f;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      float* srow = &sm.s_tile[(row0 + r) * D + col0];
      Vec<kC> s = ld_vec<kC>(srow);
#pragma unroll
      for (int i = 0; i < kC; ++i) {
        s.x[i] = fmaf(gamma_s, s.x[i], kr[r] * vc[i]);
        if constexpr (!kSplit) op[i] = fmaf(s.x[i], qtr[r], op[i]);
      }
      if (!last || kSplit) st_vec<kC>(srow, s.x);
      if (last && store_final) st_state<TS, kC>(s_out + r * p.pool_s.stride_row, s.x);
    }
    if constexpr (kSplit) {
      tiling::cluster_wait();  // phase j + 1: q~ of token j is in qts_in[j & 1]
      ld16(sm.qts_in[j & 1] + row0, qtr);
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const Vec<kC> sn = ld_vec<kC>(&sm.s_tile[(row0 + r) * D + col0]);
#pragma unroll
        for (int i = 0; i < kC; ++i) op[i] = fmaf(sn.x[i], qtr[r], op[i]);
      }
    }
    if (p.inter_s.data) {  // per-token S: a separate loop, so the common path above stays short
      scaled_kv(kr, kc, vc);  // again rather than held through the loop above (registers)
      float* dst = static_cast<float*>(p.inter_s.data) + p.inter_s.offset(b * p.seqlen + t, h) +
                   row0 * p.inter_s.stride_row + col0;
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        Vec<kC> s = ld_vec<kC>(&sm.s_tile[(row0 + r) * D + col0]);
        if (last && !kSplit) {  // the tile holds S_new only for earlier tokens (and with kSplit)
#pragma unroll
          for (int i = 0; i < kC; ++i) s.x[i] = fmaf(gamma_s, s.x[i], kr[r] * vc[i]);
        }
        stg_vec<kC>(dst + r * p.inter_s.stride_row, s.x);
      }
    }
    st_vec<kC>(&sm.opart[warp][col0], op);
    __syncthreads();  // (C) o partials visible; token inputs free for the next token
    if (tid < D / 2) {
      float o2[2] = {0.f, 0.f};
#pragma unroll
      for (int w = 0; w < G::kWarps; ++w) {
        o2[0] += sm.opart[w][2 * tid];
        o2[1] += sm.opart[w][2 * tid + 1];
      }
      gating::store2_from_float(p.o.data, p.o.dtype, p.o.offset(b, t, h) + 2 * tid, p.scale * o2[0],
                                p.scale * o2[1]);
    }
  }
  if constexpr (kSplit) {
    if (solver) tiling::cluster_wait();  // phase len (the state CTA arrived at its last token)
  }
  if constexpr (kAsyncS) {
    if constexpr (kLateS) {
      if (len == 0) copy_s();
    }
    if (len == 0) tiling::cp_async_wait<0>();
  }
  if (len == 0 && store_final && keeper) {  // no token: the states move to the write slot unchanged
    TS* s_out = s_pool + p.pool_s.offset(write, h);
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const Vec<kC> s = ld_vec<kC>(&sm.s_tile[(row0 + r) * D + col0]);
      st_state<TS, kC>(s_out + (row0 + r) * p.pool_s.stride_row + col0, s.x);
    }
  }
}

}  // namespace kernels
GKA_NAMESPACE_END
