// gka/kernels/bwd_fusion_kernel.cuh: the optional input transforms of spec 12.3 around the GPU
// backward. The backward's kernels work on the operator's q, k, v; with l2norm_qk / fuse_beta these
// are transforms of the raw inputs, so api/backward.cuh
//   1. materialises them per query head (beta belongs to the query head, so with GQA every query
//      head has its own copy of k and v): fused_inputs_kernel, in the dtype the forward's kernels
//      used for them (bf16 inputs: rounded to bf16, exactly the forward's single-policy operands);
//   2. runs the backward on them (H_kv = H_q, no transforms), gradients into fp32 workspace arrays;
//   3. chains the gradients back to the raw inputs: fused_inputs_backward_kernel (dq, dk and dv
//      summed over each kv group in a fixed order, dbeta), the formulas of reference/input_fusions.h:
//        y = x / (n + eps):   dx = dy / (n + eps) - x (x.dy) / (n (n + eps)^2)   (second term 0 at n = 0)
//        y = (beta + eps) x:  dx = (beta + eps) dy,  dbeta += x.dy
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

struct FusionParams {
  int64_t batch = 1, seqlen = 0, heads_q = 0, group = 1;
  bool l2norm = false, use_beta = false;
  TokenTensor q, k, v, beta;        // raw inputs (k, v per kv head)
  TokenTensor qh, kh, vh;           // transformed, per query head (fused_inputs_kernel's outputs)
  TokenTensor dqh, dkh, dvh;        // gradients w.r.t. the transformed inputs (fp32, per query head)
  TokenTensor dq, dk, dv, dbeta;    // gradients w.r.t. the raw inputs
};

constexpr int kFusionThreads = 128;  // 4 warps, one (token, head) row each

template <int D>
struct FusionRow {
  static constexpr int kPer = D / 32;  // elements per lane: lane l holds columns l*kPer ..
  float x[kPer];

  GKA_DEVICE void load(const TokenTensor& t, int64_t b, int64_t tok, int64_t h, int lane) {
#pragma unroll
    for (int i = 0; i < kPer; i += 2) {
      const float2 v = gating::load2_as_float(t.data, t.dtype, t.offset(b, tok, h) + lane * kPer + i);
      x[i] = v.x;
      x[i + 1] = v.y;
    }
  }
  GKA_DEVICE void store(const TokenTensor& t, int64_t b, int64_t tok, int64_t h, int lane, float s) const {
#pragma unroll
    for (int i = 0; i < kPer; i += 2)
      gating::store2_from_float(t.data, t.dtype, t.offset(b, tok, h) + lane * kPer + i, s * x[i], s * x[i + 1]);
  }
  GKA_DEVICE float dot(const FusionRow& o) const {
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) s += x[i] * o.x[i];
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
    return s;
  }
};

// Grid: (ceil(B*T*H_q / 4)). Warp w of a block: row = (token, query head).
template <int D>
__global__ void __launch_bounds__(kFusionThreads) fused_inputs_kernel(FusionParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kFusionThreads / 32) + (threadIdx.x >> 5);
  if (row >= p.batch * p.seqlen * p.heads_q) return;
  const int64_t h = row % p.heads_q, tok = row / p.heads_q, b = tok / p.seqlen, t = tok % p.seqlen;
  const int64_t hk = h / p.group;
  const float be = p.use_beta ? gating::load_as_float(p.beta.data, p.beta.dtype, p.beta.offset(b, t, h)) : 0.f;
  FusionRow<D> q, k, v;
  q.load(p.q, b, t, h, lane);
  k.load(p.k, b, t, hk, lane);
  v.load(p.v, b, t, hk, lane);
  q.store(p.qh, b, t, h, lane, gating::fused_scale(p.l2norm, q.dot(q), false, 0.f));
  k.store(p.kh, b, t, h, lane, gating::fused_scale(p.l2norm, k.dot(k), p.use_beta, be));
  v.store(p.vh, b, t, h, lane, gating::fused_scale(false, 0.f, p.use_beta, be));
}

// dy -> dx through y = x / (n + eps) (in place on g), given x.
template <int D>
GKA_DEVICE inline void l2norm_backward(const FusionRow<D>& x, FusionRow<D>& g) {
  const float n = sqrtf(x.dot(x)), den = n + gating::kL2NormEps;
  const float xg = x.dot(g);
  const float radial = n > 0.f ? xg / (n * den * den) : 0.f;
#pragma unroll
  for (int i = 0; i < FusionRow<D>::kPer; ++i) g.x[i] = g.x[i] / den - x.x[i] * radial;
}

// Grid: (ceil(B*T*H_kv / 4)). Warp w of a block: (token, kv head), looping over its query heads.
template <int D>
__global__ void __launch_bounds__(kFusionThreads) fused_inputs_backward_kernel(FusionParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t heads_kv = p.heads_q / p.group;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kFusionThreads / 32) + (threadIdx.x >> 5);
  if (row >= p.batch * p.seqlen * heads_kv) return;
  const int64_t hk = row % heads_kv, tok = row / heads_kv, b = tok / p.seqlen, t = tok % p.seqlen;
  FusionRow<D> k, kn, v, dk, dv;
  k.load(p.k, b, t, hk, lane);
  v.load(p.v, b, t, hk, lane);
  kn = k;  // the L2-normalised k (what beta scales)
  if (p.l2norm) {
    const float s = 1.f / (sqrtf(k.dot(k)) + gating::kL2NormEps);
#pragma unroll
    for (int i = 0; i < FusionRow<D>::kPer; ++i) kn.x[i] *= s;
  }
#pragma unroll
  for (int i = 0; i < FusionRow<D>::kPer; ++i) dk.x[i] = dv.x[i] = 0.f;
  for (int64_t g = 0; g < p.group; ++g) {
    const int64_t h = hk * p.group + g;
    FusionRow<D> gq, gk, gv;
    gq.load(p.dqh, b, t, h, lane);
    gk.load(p.dkh, b, t, h, lane);
    gv.load(p.dvh, b, t, h, lane);
    if (p.l2norm) {
      FusionRow<D> q;
      q.load(p.q, b, t, h, lane);
      l2norm_backward<D>(q, gq);
    }
    gq.store(p.dq, b, t, h, lane, 1.f);
    if (p.use_beta) {
      const float be = gating::load_as_float(p.beta.data, p.beta.dtype, p.beta.offset(b, t, h));
      const float dbeta = kn.dot(gk) + v.dot(gv);
      if (lane == 0) gating::store_from_float(p.dbeta.data, p.dbeta.dtype, p.dbeta.offset(b, t, h), dbeta);
      const float s = be + gating::kBetaEps;
#pragma unroll
      for (int i = 0; i < FusionRow<D>::kPer; ++i) {
        gk.x[i] *= s;
        gv.x[i] *= s;
      }
    }
#pragma unroll
    for (int i = 0; i < FusionRow<D>::kPer; ++i) {
      dk.x[i] += gk.x[i];  // the L2-norm backward is linear in dy: apply it once to the group sum
      dv.x[i] += gv.x[i];
    }
  }
  if (p.l2norm) l2norm_backward<D>(k, dk);
  dk.store(p.dk, b, t, hk, lane, 1.f);
  dv.store(p.dv, b, t, hk, lane, 1.f);
}

}  // namespace kernels
GKA_NAMESPACE_END
