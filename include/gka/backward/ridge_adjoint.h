// gka/backward/ridge_adjoint.h: the per-token scalars of the solve and covariance adjoints
// (spec 4.4-4.5), as host/device code shared by the reference and the GPU backward.
//
//   z_t = A_t^{-1} dx_t is solved only where a solve depends on H_t: num_iter > 0 and nu_t > 0
//   (the nu = 0 guard of spec 12.4 / 12.13 makes x_t = z_t = 0 and Psi_t = 0 there).
//   u_t = a z_t^T x_t,   w_t = 2 u_t / nu_t,   and the lambda part of Psi_t is -(u_t / nu_t) H_t
//   = -(w_t / 2) H_t; its share of <Psi_t, H_t> is -u_t nu_t.
#pragma once

#include "gka/config.h"

GKA_NAMESPACE_BEGIN
namespace grad {

// Whether token t has a solve adjoint z_t (otherwise z_t = 0).
template <class Real>
GKA_HOST_DEVICE inline bool has_solve_adjoint(int num_iter, Real nu) {
  return num_iter > 0 && nu > Real(0);
}

// The lambda-path scalars of one token; all 0 where the nu = 0 guard fires.
template <class Real>
struct RidgeAdjoint {
  Real u = 0;     // a z^T x
  Real w = 0;     // 2 u / nu
  Real u_nu = 0;  // u nu
  GKA_HOST_DEVICE Real u_over_nu() const { return Real(0.5) * w; }  // coefficient of -H in Psi
};

// From zx = z_t^T x_t, the ridge ratio a and nu_t.
template <class Real>
GKA_HOST_DEVICE inline RidgeAdjoint<Real> ridge_adjoint(Real ratio, Real zx, Real nu) {
  RidgeAdjoint<Real> r;
  if (!(nu > Real(0))) return r;
  r.u = ratio * zx;
  r.w = Real(2) * r.u / nu;
  r.u_nu = r.u * nu;
  return r;
}

}  // namespace grad
GKA_NAMESPACE_END
