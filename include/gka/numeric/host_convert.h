// gka/numeric/host_convert.h: host-only bf16 / fp16 <-> float conversions by bit manipulation, and
// element loads/stores of any gka::DType through double. Used by the reference and the tools, so it
// must compile with a plain C++ compiler (no CUDA headers).
//
// Rounding is round-to-nearest-even everywhere; NaN stays NaN (quiet, sign kept), +-Inf stays Inf,
// values beyond the format's range round to Inf, and fp16 subnormals are produced and read exactly.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "gka/config.h"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// ---- bf16: the top 16 bits of a float ---------------------------------------------------------

inline float bf16_bits_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16_bits(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  // Adding 0x7fff plus the kept LSB rounds to nearest, ties to even; a carry into the exponent is
  // the correct result (including overflow to Inf).
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

// ---- fp16: 1 sign, 5 exponent (bias 15), 10 mantissa bits ------------------------------------

inline float fp16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));  // Inf / NaN
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t float_to_fp16_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t x = u & 0x7fffffffu;
  if (x > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((x >> 13) & 0x3ffu));  // NaN
  if (x >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 (or Inf) -> Inf
  if (x < 0x33000000u) return sign;  // below 2^-25: rounds to zero
  if (x < 0x38800000u) {             // below 2^-14: fp16 subnormal, value / 2^-24 rounded
    const uint32_t mantissa = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - (x >> 23);  // 14 .. 24
    uint32_t result = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (result & 1u))) ++result;  // may carry into the min normal
    return static_cast<uint16_t>(sign | result);
  }
  uint32_t result = (x - 0x38000000u) >> 13;  // rebias 127 -> 15
  const uint32_t rest = x & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (result & 1u))) ++result;
  return static_cast<uint16_t>(sign | result);
}

// ---- from double ------------------------------------------------------------------------------

// double -> float rounded to odd: truncate, then set the last bit if anything was lost. Rounding
// that float to a format with at least two fewer mantissa bits then equals rounding the double
// directly, so double -> bf16/fp16 is correctly rounded (no double-rounding error).
inline float double_to_float_round_to_odd(double d) {
  if (std::isnan(d) || std::isinf(d)) return static_cast<float>(d);
  // Beyond FLT_MAX: the largest float (odd mantissa) stands for "larger, inexact".
  if (std::fabs(d) > 3.4028234663852886e38) return std::copysign(bits_float(0x7f7fffffu), static_cast<float>(d));
  float f = static_cast<float>(d);
  if (static_cast<double>(f) == d) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);
  return bits_float(float_bits(f) | 1u);
}

inline uint16_t double_to_bf16_bits(double d) { return float_to_bf16_bits(double_to_float_round_to_odd(d)); }
inline uint16_t double_to_fp16_bits(double d) { return float_to_fp16_bits(double_to_float_round_to_odd(d)); }

// ---- element access of any dtype --------------------------------------------------------------

// Element `index` (in elements, may be negative) of an array of `type` starting at `base`.
inline double load_as_double(const void* base, DType type, int64_t index) {
  switch (type) {
    case DType::kBF16: return bf16_bits_to_float(static_cast<const uint16_t*>(base)[index]);
    case DType::kFP16: return fp16_bits_to_float(static_cast<const uint16_t*>(base)[index]);
    case DType::kFP32: return static_cast<const float*>(base)[index];
    case DType::kFP64: return static_cast<const double*>(base)[index];
  }
  return std::nan("");
}

// Stores `value` rounded (to nearest even) to `type`.
inline void store_from_double(void* base, DType type, int64_t index, double value) {
  switch (type) {
    case DType::kBF16: static_cast<uint16_t*>(base)[index] = double_to_bf16_bits(value); return;
    case DType::kFP16: static_cast<uint16_t*>(base)[index] = double_to_fp16_bits(value); return;
    case DType::kFP32: static_cast<float*>(base)[index] = static_cast<float>(value); return;
    case DType::kFP64: static_cast<double*>(base)[index] = value; return;
  }
}

GKA_NAMESPACE_END
