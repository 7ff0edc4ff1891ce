// gka/kernels/bwd_finish_kernel.cuh: the last step of the GPU backward (kernels/backward_params.cuh).
//
// * bwd_group_sum_kernel: dk and dv of kv head hk are the sums of the per-query-head workspace
//   gradients over the group h = hk*G .. hk*G+G-1 (spec 12.8), added in that fixed order (no atomics,
//   so two runs are bitwise equal), and written once in the output dtype.
// * bwd_state_grads_kernel: dH_0 = -sym(R-bar_{-1}) - B~/2 (spec 4.7, the lambda term included and
//   symmetrised, spec 12.13) and dS_0 = S^ before the first chunk.
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/kernels/backward_params.cuh"

GKA_NAMESPACE_BEGIN
namespace kernels {

constexpr int kBwdFinishThreads = 256;

// Grid: (blocks over tokens, H_kv). Each thread handles element pairs (d, d+1) of one token.
template <int D>
__global__ void __launch_bounds__(kBwdFinishThreads) bwd_group_sum_kernel(BackwardParams p, int64_t tokens) {
  const int64_t hk = blockIdx.y;
  const int64_t pairs = tokens * (D / 2);
  const int64_t T = p.geo.seqlen;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t tok = i / (D / 2), d = 2 * (i % (D / 2));
    const int64_t b = tok / T, t = tok % T;
    float2 sk = make_float2(0.f, 0.f), sv = make_float2(0.f, 0.f);
    for (int64_t g = 0; g < p.group; ++g) {
      const int64_t h = hk * p.group + g;
      const float2 k2 = *reinterpret_cast<const float2*>(static_cast<const float*>(p.ws.dk.data) + p.ws.dk.offset(0, tok, h) + d);
      const float2 v2 = *reinterpret_cast<const float2*>(static_cast<const float*>(p.ws.dv.data) + p.ws.dv.offset(0, tok, h) + d);
      sk.x += k2.x; sk.y += k2.y;
      sv.x += v2.x; sv.y += v2.y;
    }
    gating::store2_from_float(p.dk_out.data, p.dk_out.dtype, p.dk_out.offset(b, t, hk) + d, sk.x, sk.y);
    gating::store2_from_float(p.dv_out.data, p.dv_out.dtype, p.dv_out.offset(b, t, hk) + d, sv.x, sv.y);
  }
}

// Grid: (blocks over D*D, H_q, num_seqs).
template <int D>
__global__ void __launch_bounds__(kBwdFinishThreads) bwd_state_grads_kernel(BackwardParams p) {
  const int64_t h = blockIdx.y, seq = blockIdx.z;
  const int64_t DD = static_cast<int64_t>(D) * D;
  const int64_t base = (seq * p.heads_q + h) * DD;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < DD;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = e / D, col = e % D;
    if (p.dh0.present()) {
      const float r = 0.5f * (p.ws.r_first[base + row * D + col] + p.ws.r_first[base + col * D + row]);
      const float bl =
          p.bp_lambda ? 0.25f * (p.ws.b_total[base + row * D + col] + p.ws.b_total[base + col * D + row]) : 0.f;
      static_cast<float*>(p.dh0.data)[p.dh0.offset(seq, h) + row * p.dh0.stride_row + col] = -r - bl;
    }
    if (p.ds0.present())
      static_cast<float*>(p.ds0.data)[p.ds0.offset(seq, h) + row * p.ds0.stride_row + col] = p.ws.s_first[base + e];
  }
}

}  // namespace kernels
GKA_NAMESPACE_END
