// gka/solver/chebyshev_schedule.h: the scalar recurrences of the Chebyshev solve (spec 2.3),
// shared by the float64 reference, the GPU kernels and the decode step.
//
// With lambda = a * nu the spectral interval of A = H + lambda I is [a nu, (1 + a) nu], so
//   rho = 1 / (1 + 2a)        (data independent)
//   c   = rho^2 / 4
//   eta = 2 / ((1 + 2a) nu)   (the only per-token quantity)
// and omega_0 = 2, omega_i = 1 / (1 - c omega_{i-1}) is one table for every token.
#pragma once

#include "gka/config.h"

GKA_NAMESPACE_BEGIN

template <class Real>
GKA_HOST_DEVICE inline Real chebyshev_c(Real ridge_ratio) {
  const Real rho = Real(1) / (Real(1) + Real(2) * ridge_ratio);
  return rho * rho / Real(4);
}

// Step size for a token whose covariance has Frobenius norm nu > 0.
template <class Real>
GKA_HOST_DEVICE inline Real chebyshev_eta(Real ridge_ratio, Real nu) {
  return Real(2) / ((Real(1) + Real(2) * ridge_ratio) * nu);
}

template <class Real>
GKA_HOST_DEVICE inline constexpr Real chebyshev_omega0() { return Real(2); }

template <class Real>
GKA_HOST_DEVICE inline Real chebyshev_next_omega(Real c, Real omega) {
  return Real(1) / (Real(1) - c * omega);
}

// One element of a step (spec 2.3), given e = (A xi)_i and q_i at the step's omega:
//   delta = eta omega (e - q) + (omega - 1) xi_prev;  xi_prev <- xi;  xi <- omega xi - delta.
template <class Real>
GKA_HOST_DEVICE inline void chebyshev_update(Real eta, Real omega, Real e, Real q, Real& xi, Real& xi_prev) {
  const Real delta = eta * omega * (e - q) + (omega - Real(1)) * xi_prev;
  xi_prev = xi;
  xi = omega * xi - delta;
}

GKA_NAMESPACE_END
