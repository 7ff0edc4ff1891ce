// gka/reference/input_fusions.h: the optional input transforms of spec 12.3 and their backward,
// on contiguous per-(sequence, head) rows [T][D].
//
//   l2norm_qk:  q_t <- q_t / (||q_t|| + 1e-6),  k_t <- k_t / (||k_t|| + 1e-6)    (training's epsilon)
//   fuse_beta:  k_t <- (beta_t + 1e-6) k_t,       v_t <- (beta_t + 1e-6) v_t      (after the L2 norm)
//
// beta belongs to the query head, so with GQA every query head scales its own copy of k and v.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "gka/config.h"

GKA_NAMESPACE_BEGIN
namespace reference {

constexpr double kL2NormEpsilon = 1e-6;
constexpr double kBetaEpsilon = 1e-6;

template <class Real>
inline Real row_norm(const Real* x, int D) {
  Real s = 0;
  for (int i = 0; i < D; ++i) s += x[i] * x[i];
  return std::sqrt(s);
}

// Every row x_t of x ([T][D]) becomes x_t / (||x_t|| + 1e-6).
template <class Real>
inline void l2_normalize_rows(std::vector<Real>& x, int D) {
  for (size_t t = 0; t * D < x.size(); ++t) {
    Real* row = x.data() + t * D;
    const Real inv = Real(1) / (row_norm(row, D) + Real(kL2NormEpsilon));
    for (int i = 0; i < D; ++i) row[i] *= inv;
  }
}

// Chain rule through y = x / (n + eps), n = ||x||:
//   dx = dy / (n + eps) - x (x . dy) / (n (n + eps)^2).
// The second term vanishes as x -> 0 (x/n stays bounded), so at n = 0 it is dropped.
// `raw` holds x; `grad` holds dy on entry and dx on return.
template <class Real>
inline void l2_normalize_rows_backward(const std::vector<Real>& raw, std::vector<Real>& grad, int D) {
  for (size_t t = 0; t * D < raw.size(); ++t) {
    const Real* x = raw.data() + t * D;
    Real* g = grad.data() + t * D;
    const Real n = row_norm(x, D), denom = n + Real(kL2NormEpsilon);
    Real x_dot_g = 0;
    for (int i = 0; i < D; ++i) x_dot_g += x[i] * g[i];
    const Real radial = n > Real(0) ? x_dot_g / (n * denom * denom) : Real(0);
    for (int i = 0; i < D; ++i) g[i] = g[i] / denom - x[i] * radial;
  }
}

// Every row x_t of x ([T][D]) becomes (beta_t + 1e-6) x_t.
template <class Real>
inline void scale_rows_by_beta(std::vector<Real>& x, const std::vector<Real>& beta, int D) {
  for (size_t t = 0; t < beta.size(); ++t) {
    const Real s = beta[t] + Real(kBetaEpsilon);
    for (int i = 0; i < D; ++i) x[t * D + i] *= s;
  }
}

// Chain rule through y_t = (beta_t + 1e-6) x_t. `unscaled` holds x; `grad` holds dy on entry and dx
// on return; dbeta_t += x_t . dy_t (accumulated, because k and v both contribute).
template <class Real>
inline void scale_rows_by_beta_backward(const std::vector<Real>& unscaled, const std::vector<Real>& beta,
                                        std::vector<Real>& grad, std::vector<Real>& dbeta, int D) {
  for (size_t t = 0; t < beta.size(); ++t) {
    const Real s = beta[t] + Real(kBetaEpsilon);
    Real dot = 0;
    for (int i = 0; i < D; ++i) {
      dot += unscaled[t * D + i] * grad[t * D + i];
      grad[t * D + i] *= s;
    }
    dbeta[t] += dot;
  }
}

}  // namespace reference
GKA_NAMESPACE_END
