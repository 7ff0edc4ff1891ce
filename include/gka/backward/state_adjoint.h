// gka/backward/state_adjoint.h: the adjoint of a decayed state M_t = e^{l_t} M_{t-1} + (token
// term), for H (l = f) and S (l = g), as host/device code shared by the reference and the GPU
// backward (spec 4.2, 4.5, 4.7, 12.12, 12.13).
#pragma once

#include "gka/config.h"

GKA_NAMESPACE_BEGIN
namespace grad {

// One reverse step at token t, given adj = dL/dM_t (total, D x D): returns the gate gradient in
// local form, dl_t = e^{l_t} <adj, M_{t-1}>, and writes carry = e^{l_t} adj, the share of
// dL/dM_{t-1} that flows back through the decay. An underflowed decay gives exact zeros.
template <class Real>
GKA_HOST_DEVICE inline Real decayed_state_adjoint_step(int D, Real decay, const Real* adj, const Real* M_prev,
                                                       Real* carry) {
  Real dot = 0;
  for (int e = 0; e < D * D; ++e) dot += adj[e] * M_prev[e];
  for (int e = 0; e < D * D; ++e) carry[e] = decay * adj[e];
  return decay * dot;
}

// The symmetric part (G_ij + G_ji) / 2 of a gradient w.r.t. a symmetric state (dH0, spec 12.13).
template <class Real>
GKA_HOST_DEVICE inline Real symmetric_part(Real g_ij, Real g_ji) {
  return Real(0.5) * (g_ij + g_ji);
}

}  // namespace grad
GKA_NAMESPACE_END
