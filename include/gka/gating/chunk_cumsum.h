// gka/gating/chunk_cumsum.h: the chunk-local cumulative log-decays of spec 3.1 and the decay
// factors built from them, as host/device scalar code (no CUDA headers; g++ compiles it).
//
// Inside one chunk, F_j = sum_{i<=j} f_i restarts at every chunk. Only differences F_later -
// F_earlier (<= 0 for log-gates <= 0) and F_j itself are exponentiated (spec 8, 12.2), so strong
// decays underflow to 0 and never overflow. The backward's reverse cumsum (spec 4.2 step 5, 4.6
// Pass F) is here too: it turns per-position gradients w.r.t. F into gradients w.r.t. the gates.
#pragma once

#include <cmath>

#include "gka/config.h"

GKA_NAMESPACE_BEGIN
namespace gating {

// F[j] = sum_{i<=j} gate(begin + i) for j < len: the inclusive chunk-local cumsum. Gate may be a
// host-only callable when called from host code (the reference).
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <class Real, class Gate>
GKA_HOST_DEVICE inline void chunk_local_cumsum(Gate gate, int begin, int len, Real* F) {
  Real acc = 0;
  for (int j = 0; j < len; ++j) F[j] = acc += gate(begin + j);
}

// out[j] = sum_{l>=j} in[l] for j < len: the chunk-local reverse cumsum (in and out may alias).
template <class Real>
GKA_HOST_DEVICE inline void chunk_reverse_cumsum(const Real* in, int len, Real* out) {
  Real acc = 0;
  for (int j = len - 1; j >= 0; --j) out[j] = acc += in[j];
}

// e^{F_later - F_earlier}: the decay from one position to a later one (argument <= 0).
template <class Real>
GKA_HOST_DEVICE inline Real decay_between(Real F_later, Real F_earlier) {
  using std::exp;
  return exp(F_later - F_earlier);
}

// L_ji = e^{F_j - F_i} for i <= j, 0 above the diagonal (U_ij = L_ji is the same call).
template <class Real>
GKA_HOST_DEVICE inline Real decay_mask(const Real* F, int j, int i) {
  return i <= j ? decay_between(F[j], F[i]) : Real(0);
}

// Gamma_j = e^{F_j}: the decay from the state before the chunk to position j.
template <class Real>
GKA_HOST_DEVICE inline Real decay_from_start(Real F_j) {
  using std::exp;
  return exp(F_j);
}

// e^{F_last - F_i}: the decay from position i to the chunk's end (kappa_i = this * k_i).
template <class Real>
GKA_HOST_DEVICE inline Real decay_to_end(const Real* F, int len, int i) {
  return decay_between(F[len - 1], F[i]);
}

}  // namespace gating
GKA_NAMESPACE_END
