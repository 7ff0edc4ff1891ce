// gka/gating/gates.cuh: the gating primitives of the chunk-wise kernels (spec 3.1, 8, 12.3).
//
// * chunk-local inclusive cumsums of the log-gates in fp32 (restart at every chunk);
// * decay factors formed only from differences of those sums, exp(F_j - F_i) with j >= i,
//   exp(F_last - F_i) and exp(F_j): every exponent is <= 0, so values underflow to 0, never overflow;
// * the optional fused input transforms: k <- (beta+1e-6) k / (||k|| + 1e-6), the same for q
//   without beta and for v without the norm, expressed as one per-token scale factor.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "gka/config.h"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace gating {

constexpr float kL2NormEps = 1e-6f;
constexpr float kBetaEps = 1e-6f;

// One element of a tensor whose dtype is only known at run time (gates, alpha, beta, tails).
GKA_DEVICE inline float load_as_float(const void* base, DType t, int64_t off) {
  switch (t) {
    case DType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[off]);
    case DType::kFP16: return __half2float(static_cast<const __half*>(base)[off]);
    case DType::kFP32: return static_cast<const float*>(base)[off];
    default: return static_cast<float>(static_cast<const double*>(base)[off]);
  }
}
// Two consecutive elements (off even, 4/8-byte aligned by the validation's 16-byte rule).
GKA_DEVICE inline float2 load2_as_float(const void* base, DType t, int64_t off) {
  switch (t) {
    case DType::kBF16: return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(static_cast<const __nv_bfloat16*>(base) + off));
    case DType::kFP16: return __half22float2(*reinterpret_cast<const __half2*>(static_cast<const __half*>(base) + off));
    default: return *reinterpret_cast<const float2*>(static_cast<const float*>(base) + off);
  }
}
GKA_DEVICE inline void store2_from_float(void* base, DType t, int64_t off, float a, float b) {
  switch (t) {
    case DType::kBF16: *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(base) + off) = __floats2bfloat162_rn(a, b); break;
    case DType::kFP16: *reinterpret_cast<__half2*>(static_cast<__half*>(base) + off) = __floats2half2_rn(a, b); break;
    default: *reinterpret_cast<float2*>(static_cast<float*>(base) + off) = make_float2(a, b); break;
  }
}
// One element (per-token scalars: dalpha, dbeta, ...).
GKA_DEVICE inline void store_from_float(void* base, DType t, int64_t off, float a) {
  switch (t) {
    case DType::kBF16: static_cast<__nv_bfloat16*>(base)[off] = __float2bfloat16_rn(a); break;
    case DType::kFP16: static_cast<__half*>(base)[off] = __float2half_rn(a); break;
    default: static_cast<float*>(base)[off] = a; break;
  }
}

// Two consecutive elements of a known type (off even, aligned as above).
template <class T> GKA_DEVICE inline void store2(T* p, float a, float b);
template <> GKA_DEVICE inline void store2<__nv_bfloat16>(__nv_bfloat16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}
template <> GKA_DEVICE inline void store2<__half>(__half* p, float a, float b) {
  *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
}
template <> GKA_DEVICE inline void store2<float>(float* p, float a, float b) {
  *reinterpret_cast<float2*>(p) = make_float2(a, b);
}

// A log-gate as the kernels see it: absent means 0 (no decay).
struct Gate {
  const float* data = nullptr;
  int64_t stride_batch = 0, stride_token = 0, stride_head = 0;
  GKA_DEVICE float at(int64_t b, int64_t t, int64_t h) const {
    return data ? data[b * stride_batch + t * stride_token + h * stride_head] : 0.f;
  }
};

// Inclusive cumsum of vals[0..n) (n <= 64) in place, by one warp; entries past `valid` are taken
// as 0 so the sum stays flat over a tail. Call from a single full warp.
GKA_DEVICE inline void warp_cumsum64(float* vals, int valid, int lane) {
  float a = (2 * lane < valid) ? vals[2 * lane] : 0.f;
  float b = (2 * lane + 1 < valid) ? vals[2 * lane + 1] : 0.f;
  const float pair = a + b;
  float incl = pair;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  const float excl = incl - pair;
  vals[2 * lane] = excl + a;
  vals[2 * lane + 1] = excl + a + b;
}

// F[0..64): the chunk-local inclusive cumsum of `gate` over the len tokens from t0 (0 past len),
// formed by one warp in shared memory: where the scans' per-chunk weight passes start.
GKA_DEVICE inline void warp_chunk_cumsum64(const Gate& gate, int64_t b, int64_t t0, int len, int64_t h, float* F,
                                           int lane) {
  for (int t = lane; t < 64; t += 32) F[t] = t < len ? gate.at(b, t0 + t, h) : 0.f;
  __syncwarp();
  warp_cumsum64(F, len, lane);
  __syncwarp();
}

// exp of a difference of chunk-local cumsums; the callers guarantee j >= i (argument <= 0).
GKA_DEVICE inline float decay(float F_later, float F_earlier) { return __expf(F_later - F_earlier); }

// Per-token scale of the fused transforms (spec 12.3): sum_sq = ||x||^2 of the raw vector.
GKA_DEVICE inline float fused_scale(bool l2norm, float sum_sq, bool use_beta, float beta) {
  float s = 1.f;
  if (l2norm) s = 1.f / (sqrtf(sum_sq) + kL2NormEps);
  if (use_beta) s *= (beta + kBetaEps);
  return s;
}

}  // namespace gating
GKA_NAMESPACE_END
