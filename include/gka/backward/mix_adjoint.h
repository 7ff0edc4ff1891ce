// gka/backward/mix_adjoint.h: the alpha-mix q~ = q + alpha (x - q) of spec 2.2 and its adjoint
// (spec 4.3), per token, as host/device code shared by the reference and the GPU backward.
//
//   dalpha_t = dq~_t^T (x_t - q_t),   dx_t = alpha_t dq~_t,   dq_t = (1 - alpha_t) dq~_t  (direct path)
//
// With num_iter = 0 there is no solve: x = q, so dalpha = 0 exactly and dx flows straight into dq
// (spec 12.13); solve_query_grad below carries that convention for the solve adjoint's term.
#pragma once

#include "gka/config.h"

GKA_NAMESPACE_BEGIN
namespace grad {

// One element of q~ = q + alpha (x - q).
template <class Real>
GKA_HOST_DEVICE inline Real mix_query(Real alpha, Real q, Real x) {
  return q + alpha * (x - q);
}

// q~ for a row of D elements.
template <class Real>
GKA_HOST_DEVICE inline void mix_query_row(int D, Real alpha, const Real* q, const Real* x, Real* qmix) {
  for (int i = 0; i < D; ++i) qmix[i] = mix_query(alpha, q[i], x[i]);
}

// The alpha-mix adjoint of one token: writes dx and the direct-path dq (both D) from dq~ and returns
// dalpha (0 when num_iter = 0).
template <class Real>
GKA_HOST_DEVICE inline Real mix_adjoint_row(int D, Real alpha, const Real* dqmix, const Real* q, const Real* x,
                                            int num_iter, Real* dx, Real* dq) {
  Real dalpha = 0;
  for (int i = 0; i < D; ++i) {
    dalpha += dqmix[i] * (x[i] - q[i]);
    dx[i] = alpha * dqmix[i];
    dq[i] = (Real(1) - alpha) * dqmix[i];
  }
  return num_iter == 0 ? Real(0) : dalpha;
}

// What the solve adds to dq_t (spec 4.4): z_t, or dx_t itself when num_iter = 0 (x = q).
template <class Real>
GKA_HOST_DEVICE inline Real solve_query_grad(int num_iter, Real dx, Real z) {
  return num_iter == 0 ? dx : z;
}

}  // namespace grad
GKA_NAMESPACE_END
