// gka/kernels/decode_kernel.cuh: the decode step over a state pool (spec 5, 12.10): for each
// (sequence, head), m >= 0 new tokens advanced token by token from the pool's H and S.
//
// One CTA of 4D threads (D / 8 warps) per (sequence, head); grid = num_seqs * H_q.
//  * H (fp32) lives in registers for the whole call: warp w owns rows 8w..8w+7, lane l columns
//    kC*l..kC*l+kC-1 (kC = D / 32), so every row load and store is one coalesced 16- or 8-byte
//    access per lane.
//  * H is symmetric (prefill and every update keep it so), so (H xi)_c = sum_r H[r][c] xi_r: a warp
//    multiplies its own rows by the xi of those same rows and produces partial sums for every
//    column. The partials of all warps meet in shared memory; lanes of warp w then finish rows
//    8w..8w+7, which are again the rows that warp multiplies next. The new xi never leaves the warp:
//    one __syncthreads per Chebyshev iteration (hopper-design.md 7).
//  * S is kept in shared memory as fp32 (64 KiB at D = 128), each element read and written by one
//    thread only, so it needs no barrier; it is loaded while H is loaded and the solve runs, and it
//    is only touched after the solve (update, read-out o = s S^T q~).
//  * Final H is stored right after the last update (the stores drain during the last solve); final
//    S after the last read-out, rounded to the pool's S dtype. Per-token states go to inter_h /
//    inter_s when requested.
// Semantics as the float64 reference (gka::reference::decode): nu = 0 gives x = 0; num_iter = 0
// gives x = q; f absent means f = g; g absent means no decay; fused L2 norm (eps 1e-6) and beta.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/solver/chebyshev_schedule.h"
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
  static constexpr int kThreads = 4 * D;
  static constexpr int kWarps = D / 8;   // 8 state rows per warp
  static constexpr int kC = D / 32;      // columns per lane
  static constexpr int kPitch = D + 8;   // partial rows: pitch = 8 (mod 32) floats, conflict-free gather
  static constexpr int kGather = kWarps / 4;  // partials each gather lane sums
};

template <int D>
struct DecodeSmem {
  using G = DecodeGeometry<D>;
  float s_tile[D * D];                   // S in fp32, element (r, c) owned by one thread
  float part[2][G::kWarps][G::kPitch];   // H xi partials, double-buffered across iterations
  float opart[G::kWarps][G::kPitch];     // S^T q~ partials
  float tok[3][D];                       // raw q, k, v of the current token
  float red[G::kWarps];                  // per-warp sums of squares of H
  float scal[4];                         // alpha, gamma_h, gamma_s, beta of the current token
};

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
    st_vec<kC>(reinterpret_cast<float*>(p), x);
  } else {
#pragma unroll
    for (int i = 0; i < kC; i += 2) gating::store2<__nv_bfloat16>(p + i, x[i], x[i + 1]);
  }
}

// TS: element type of the pool's S (float or __nv_bfloat16). kMinBlocks: CTAs per SM the register
// allocation must allow (2 at D = 128 caps it at 64 registers per thread; see docs/gpu-decode.md).
template <int D, class TS, int kMinBlocks>
__global__ void __launch_bounds__(DecodeGeometry<D>::kThreads, kMinBlocks) decode_kernel(DecodeParams p) {
  using G = DecodeGeometry<D>;
  constexpr int kC = G::kC;
  extern __shared__ __align__(128) uint8_t smem_raw[];
  DecodeSmem<D>& sm = *reinterpret_cast<DecodeSmem<D>*>(smem_raw);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t seq = blockIdx.x / p.heads_q, h = blockIdx.x % p.heads_q, hk = h / p.group;
  const int64_t read = load_index(p.read_slots, p.slot_type, seq);
  if (read == p.pad_slot) return;  // padded request: nothing read, nothing written
  const int64_t write = p.write_slots ? load_index(p.write_slots, p.slot_type, seq) : read;
  const bool store_final = write != p.pad_slot;
  const bool from_pool = p.has_initial_state == nullptr || p.has_initial_state[seq] != 0;
  int64_t b = seq, t0 = 0, len = p.seqlen;
  if (p.cu_seqlens) {
    b = 0;
    t0 = load_index(p.cu_seqlens, p.cu_type, seq);
    len = load_index(p.cu_seqlens, p.cu_type, seq + 1) - t0;
  }
  const int row0 = 8 * warp;     // first of this warp's 8 state rows
  const int col0 = kC * lane;    // first of this lane's kC columns

  // ---- prologue: S -> shared (fp32), H -> registers, inputs of token 0 -> a register per loader
  TS* const s_pool = static_cast<TS*>(p.pool_s.data);
  float* const h_pool = static_cast<float*>(p.pool_h.data);
  if constexpr (sizeof(TS) == 4 && kC == 4) {  // 16-byte pieces: asynchronous, no registers held
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float* src = reinterpret_cast<const float*>(s_pool) + p.pool_s.offset(read, h) +
                         (row0 + j) * p.pool_s.stride_row + col0;
      tiling::cp_async_16(&sm.s_tile[(row0 + j) * D + col0], src, from_pool);
    }
    tiling::cp_async_commit();
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      Vec<kC> v{};
      if (from_pool) v = ld_state<TS, kC>(s_pool + p.pool_s.offset(read, h) + (row0 + j) * p.pool_s.stride_row + col0);
      st_vec<kC>(&sm.s_tile[(row0 + j) * D + col0], v.x);
    }
  }
  float H[8][kC];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    Vec<kC> v{};
    if (from_pool) v = ld_vec<kC>(h_pool + p.pool_h.offset(read, h) + (row0 + j) * p.pool_h.stride_row + col0);
#pragma unroll
    for (int i = 0; i < kC; ++i) H[j][i] = v.x[i];
  }

  // Loader threads: tid < 3D holds one element of q, k or v; 3D..3D+3 the per-token scalars
  // (alpha, f, g, beta). The value of token j + 1 is fetched into `pre` while token j is processed.
  const int which = tid / D, elem = tid % D;
  const bool loader = which < 3 || elem < 4;
  const uint8_t* lbase = nullptr;  // this loader's element at token t0; null: absent input
  int64_t lstride = 0;             // bytes per token
  DType ltype = DType::kFP32;
  float absent = 0.f;              // value of an absent input (alpha = 1; gates and beta 0)
  if (loader) {
    // selected by value: a pointer into the kernel parameters would copy them to local memory
    const bool tok = which < 3;
    const TokenTensor x = which == 0 ? p.q : which == 1 ? p.k : which == 2 ? p.v
                        : elem == 0 ? p.alpha : (elem == 3 && p.use_beta) ? p.beta : TokenTensor{};
    const gating::Gate g = elem == 1 ? p.gate_h : p.gate_s;
    if (!tok && elem == 0) absent = 1.f;
    if (x.data != nullptr) {
      const int64_t head = which == 0 || !tok ? h : hk;
      lbase = static_cast<const uint8_t*>(x.data) + (x.offset(b, t0, head) + (tok ? elem : 0)) * dtype_size(x.dtype);
      lstride = x.stride_token * dtype_size(x.dtype);
      ltype = x.dtype;
    } else if (!tok && (elem == 1 || elem == 2) && g.data != nullptr) {
      lbase = reinterpret_cast<const uint8_t*>(g.data + b * g.stride_batch + t0 * g.stride_token + h * g.stride_head);
      lstride = g.stride_token * 4;
    }
  }
  const bool is_gate = which == 3 && (elem == 1 || elem == 2);
  auto fetch = [&](int64_t j) -> float {
    const float raw = lbase ? gating::load_as_float(lbase + j * lstride, ltype, 0) : absent;
    return is_gate ? expf(raw) : raw;  // decays e^f, e^g (absent gate: e^0 = 1)
  };
  float pre = (loader && len > 0) ? fetch(0) : 0.f;

  const float cheb_c = chebyshev_c<float>(p.ridge);
  const int gj = lane & 7, gsub = lane >> 3;  // gather role: row row0 + gj, warps gsub + 4i
  auto store_h = [&](const StateTensor& dst, int64_t n) {
    float* out = static_cast<float*>(dst.data) + dst.offset(n, h);
#pragma unroll
    for (int j = 0; j < 8; ++j) st_vec<kC>(out + (row0 + j) * dst.stride_row + col0, H[j]);
  };
  if (len == 0 && store_final) store_h(p.pool_h, write);

  for (int64_t j = 0; j < len; ++j) {
    const int64_t t = t0 + j;
    if (loader) {
      if (which < 3) sm.tok[which][elem] = pre;
      else sm.scal[elem] = pre;
      if (j + 1 < len) pre = fetch(j + 1);
    }
    __syncthreads();  // (A) token inputs visible

    // fused input transforms as per-token scales (every warp computes them; no extra barrier)
    const float beta = sm.scal[3];
    float ssq = 0.f, ssk = 0.f;
    if (p.l2norm_qk) {
#pragma unroll
      for (int i = 0; i < kC; ++i) {
        const float a = sm.tok[0][col0 + i], c = sm.tok[1][col0 + i];
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

    // H <- gamma_h H + k k^T, and this thread's share of ||H||_F^2
    const float gamma_h = sm.scal[1];
    float kc[kC];
#pragma unroll
    for (int i = 0; i < kC; ++i) kc[i] = sm.tok[1][col0 + i] * ks;
    float ss = 0.f;
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      const float kr = sm.tok[1][row0 + r] * ks;
#pragma unroll
      for (int i = 0; i < kC; ++i) {
        H[r][i] = fmaf(gamma_h, H[r][i], kr * kc[i]);
        ss = fmaf(H[r][i], H[r][i], ss);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (lane == 0) sm.red[warp] = ss;
    if (p.inter_h.data) store_h(p.inter_h, b * p.seqlen + t);
    if (j + 1 == len && store_final) store_h(p.pool_h, write);
    __syncthreads();  // (B) sums of squares visible
    float nu2 = 0.f;
#pragma unroll
    for (int w = 0; w < G::kWarps; ++w) nu2 += sm.red[w];
    const float nu = sqrtf(nu2);

    // Chebyshev solve (spec 2.3). Gather lanes own row row0 + gj; the 4 lanes of a row (gsub)
    // hold identical copies, so any of them can broadcast it.
    const float qr = sm.tok[0][row0 + gj] * qs;
    float x;
    if (p.num_iter == 0) {
      x = qr;  // no solve (spec 12.1)
    } else if (!(nu > 0.f)) {
      x = 0.f;  // nu = 0 guard (spec 12.4)
    } else {
      const float lambda = p.ridge * nu;
      const float eta = chebyshev_eta<float>(p.ridge, nu);
      float xi = eta * qr, xi_prev = 0.f, omega = chebyshev_omega0<float>();
      for (int it = 0; it < p.num_iter; ++it) {
        omega = chebyshev_next_omega(cheb_c, omega);
        float xr[8];
#pragma unroll
        for (int r = 0; r < 8; ++r) xr[r] = __shfl_sync(0xffffffffu, xi, r);
        float part[kC];
#pragma unroll
        for (int i = 0; i < kC; ++i) {
          float a = 0.f;
#pragma unroll
          for (int r = 0; r < 8; ++r) a = fmaf(H[r][i], xr[r], a);
          part[i] = a;
        }
        float(*buf)[G::kPitch] = sm.part[it & 1];
        st_vec<kC>(&buf[warp][col0], part);
        __syncthreads();
        float e = 0.f;
#pragma unroll
        for (int i = 0; i < G::kGather; ++i) e += buf[gsub + 4 * i][row0 + gj];
        e += __shfl_xor_sync(0xffffffffu, e, 8);
        e += __shfl_xor_sync(0xffffffffu, e, 16);
        chebyshev_update(eta, omega, fmaf(lambda, xi, e), qr, xi, xi_prev);
      }
      x = xi;
    }
    const float alpha = sm.scal[0];
    const float qt = fmaf(alpha, x - qr, qr);  // q~ = q + alpha (x - q)

    // S <- gamma_s S + k v^T; o partials sum_r S[r][c] q~_r over this warp's rows
    if constexpr (sizeof(TS) == 4 && kC == 4) {
      if (j == 0) tiling::cp_async_wait<0>();  // this thread's own S elements
    }
    const float gamma_s = sm.scal[2];
    float vc[kC], op[kC];
#pragma unroll
    for (int i = 0; i < kC; ++i) {
      vc[i] = sm.tok[2][col0 + i] * vs;
      op[i] = 0.f;
    }
    const bool last = j + 1 == len;
    TS* s_out = s_pool + p.pool_s.offset(write, h);
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      const float kr = sm.tok[1][row0 + r] * ks;
      const float qtr = __shfl_sync(0xffffffffu, qt, r);
      float* srow = &sm.s_tile[(row0 + r) * D + col0];
      Vec<kC> s = ld_vec<kC>(srow);
#pragma unroll
      for (int i = 0; i < kC; ++i) {
        s.x[i] = fmaf(gamma_s, s.x[i], kr * vc[i]);
        op[i] = fmaf(s.x[i], qtr, op[i]);
      }
      if (!last) st_vec<kC>(srow, s.x);
      else if (store_final) st_state<TS, kC>(s_out + (row0 + r) * p.pool_s.stride_row + col0, s.x);
      if (p.inter_s.data)
        st_vec<kC>(static_cast<float*>(p.inter_s.data) + p.inter_s.offset(b * p.seqlen + t, h) +
                       (row0 + r) * p.inter_s.stride_row + col0,
                   s.x);
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
  if constexpr (sizeof(TS) == 4 && kC == 4) {
    if (len == 0) tiling::cp_async_wait<0>();
  }
  if (len == 0 && store_final) {  // no token: the states move to the write slot unchanged
    TS* s_out = s_pool + p.pool_s.offset(write, h);
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      const Vec<kC> s = ld_vec<kC>(&sm.s_tile[(row0 + r) * D + col0]);
      st_state<TS, kC>(s_out + (row0 + r) * p.pool_s.stride_row + col0, s.x);
    }
  }
}

}  // namespace kernels
GKA_NAMESPACE_END
