// tests/common/compare.h: error measures shared by the CPU and GPU tests.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace gka_test {

// ||a - b|| / ||b|| over n elements (2-norms). When b is exactly zero, the absolute ||a - b||.
// A NaN or Inf anywhere gives +Inf, so a comparison against a tolerance fails loudly.
template <class A, class B>
inline double rel_error(const A* a, const B* b, size_t n) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    if (!std::isfinite(x) || !std::isfinite(y)) return INFINITY;
    diff += (x - y) * (x - y);
    ref += y * y;
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

template <class A, class B>
inline double rel_error(const std::vector<A>& a, const std::vector<B>& b) {
  if (a.size() != b.size()) return INFINITY;
  return rel_error(a.data(), b.data(), a.size());
}

template <class A>
inline bool all_finite(const std::vector<A>& a) {
  for (const A& x : a)
    if (!std::isfinite(static_cast<double>(x))) return false;
  return true;
}

inline double max_abs(const std::vector<double>& a) {
  double m = 0;
  for (double x : a) m = std::fmax(m, std::fabs(x));
  return m;
}

}  // namespace gka_test
