// gka/reference/head_chunked.h: chunk-wise forward of one (sequence, head) pair (spec 3), the
// program the GPU kernels mirror, written in Real on contiguous host arrays. It computes the same
// function as forward_sequential (head_forward.h) up to rounding.
//
// Per chunk of C' <= C tokens (the last one may be partial), with H̄, S̄ the states before it:
//   F, G      chunk-local inclusive cumsums of f and g                        (3.1)
//   L, L^(g)  decay masks e^{F_j - F_i}, e^{G_j - G_i} for i <= j, Γ_j = e^{F_j}
//   ν_j       from T1 + T2 + T3, never forming H_j                            (3.3)
//   X         r Chebyshev steps on all C' rows at once, A·Ξ from H̄, K, L     (3.4)
//   O         s [diag(e^G) Q̃ S̄ + ((Q̃ Kᵀ) ⊙ L^(g)) V]                       (3.5)
//   H̄, S̄     advanced by the inter-chunk scan                                 (3.2)
// Only differences of cumsums are exponentiated (spec 8), so very negative gates underflow to 0
// and never overflow. The exact solve is not available here (it needs H_j itself).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "gka/backward/mix_adjoint.h"
#include "gka/config.h"
#include "gka/gating/chunk_cumsum.h"
#include "gka/reference/head_forward.h"
#include "gka/solver/chebyshev_schedule.h"

GKA_NAMESPACE_BEGIN
namespace reference {
namespace chunked {

// Rows [begin, begin + len) of a [T][D] array, or len scalars of a [T] array.
template <class Real>
inline const Real* rows(const Real* a, int begin, int width) { return a + static_cast<size_t>(begin) * width; }

// F_j = sum_{i <= j} gate_i inside the chunk (3.1); an absent gate is 0.
template <class Real, class Gate>
inline std::vector<Real> local_cumsum(Gate gate, int begin, int len) {
  std::vector<Real> F(len);
  gating::chunk_local_cumsum(gate, begin, len, F.data());
  return F;
}

// L_{ji} = e^{F_j - F_i} for i <= j, 0 above the diagonal ([len][len]).
template <class Real>
inline std::vector<Real> decay_mask(const std::vector<Real>& F) {
  const int n = static_cast<int>(F.size());
  std::vector<Real> L(static_cast<size_t>(n) * n, Real(0));
  for (int j = 0; j < n; ++j)
    for (int i = 0; i <= j; ++i) L[j * n + i] = gating::decay_mask(F.data(), j, i);
  return L;
}

// Γ_j = e^{F_j}: the decay from the state before the chunk to token j.
template <class Real>
inline std::vector<Real> decay_from_start(const std::vector<Real>& F) {
  std::vector<Real> gamma(F.size());
  for (size_t j = 0; j < F.size(); ++j) gamma[j] = gating::decay_from_start(F[j]);
  return gamma;
}

// W = A Bᵀ for row blocks A [n][D], B [m][D].
template <class Real>
inline std::vector<Real> row_gram(const Real* A, int n, const Real* B, int m, int D) {
  std::vector<Real> W(static_cast<size_t>(n) * m);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      Real acc = 0;
      for (int d = 0; d < D; ++d) acc += A[j * D + d] * B[i * D + d];
      W[j * m + i] = acc;
    }
  return W;
}

// Y = X M for X [n][D] and a row-major D x D matrix M (rows of Y: (Mᵀ x_j)ᵀ).
template <class Real>
inline std::vector<Real> times_state(const Real* X, int n, const std::vector<Real>& M, int D) {
  std::vector<Real> Y(static_cast<size_t>(n) * D, Real(0));
  for (int j = 0; j < n; ++j)
    for (int a = 0; a < D; ++a) {
      const Real xa = X[j * D + a];
      for (int b = 0; b < D; ++b) Y[j * D + b] += xa * M[a * D + b];
    }
  return Y;
}

// ν_j = ‖H_j‖_F from the three non-negative terms of spec 3.3:
//   T1 = Γ_j² ‖H̄‖_F²,  T2 = 2 Γ_j Σ_{i<=j} L_{ji} k_iᵀ H̄ k_i,  T3 = Σ_{i,l<=j} L_{ji} L_{jl} (k_iᵀ k_l)².
template <class Real>
inline std::vector<Real> frobenius_norms(const std::vector<Real>& Hbar, const Real* K, const std::vector<Real>& gamma,
                                         const std::vector<Real>& L, int len, int D) {
  Real hbar_sq = 0;
  for (Real e : Hbar) hbar_sq += e * e;
  const std::vector<Real> KH = times_state(K, len, Hbar, D);  // rows (H̄ k_i)ᵀ (H̄ symmetric)
  std::vector<Real> p(len, Real(0));                          // p_i = k_iᵀ H̄ k_i
  for (int i = 0; i < len; ++i)
    for (int d = 0; d < D; ++d) p[i] += KH[i * D + d] * K[i * D + d];
  std::vector<Real> E = row_gram(K, len, K, len, D);  // W = K Kᵀ, then E = W ⊙ W
  for (Real& e : E) e *= e;
  std::vector<Real> nu(len);
  for (int j = 0; j < len; ++j) {
    const Real t1 = gamma[j] * gamma[j] * hbar_sq;
    Real t2 = 0, t3 = 0;
    for (int i = 0; i <= j; ++i) t2 += L[j * len + i] * p[i];
    t2 *= Real(2) * gamma[j];
    for (int l = 0; l <= j; ++l) {  // T3_j = Σ_l (L E)_{jl} L_{jl}
      Real le = 0;
      for (int i = 0; i <= j; ++i) le += L[j * len + i] * E[i * len + l];
      t3 += le * L[j * len + l];
    }
    nu[j] = std::sqrt(t1 + t2 + t3);
  }
  return nu;
}

// A·Ξ = diag(Γ) (Ξ H̄) + ((Ξ Kᵀ) ⊙ L) K + diag(λ) Ξ: row j is (H_j + λ_j I) ξ_j (spec 3.4).
template <class Real>
inline std::vector<Real> ridge_matvec_rows(const std::vector<Real>& Xi, const std::vector<Real>& Hbar, const Real* K,
                                           const std::vector<Real>& gamma, const std::vector<Real>& L,
                                           const std::vector<Real>& lambda, int len, int D) {
  std::vector<Real> AXi = times_state(Xi.data(), len, Hbar, D);
  std::vector<Real> P = row_gram(Xi.data(), len, K, len, D);  // Ξ Kᵀ, masked by L below
  for (int j = 0; j < len; ++j) {
    for (int d = 0; d < D; ++d) AXi[j * D + d] = gamma[j] * AXi[j * D + d] + lambda[j] * Xi[j * D + d];
    for (int i = 0; i <= j; ++i) {
      const Real w = P[j * len + i] * L[j * len + i];
      for (int d = 0; d < D; ++d) AXi[j * D + d] += w * K[i * D + d];
    }
  }
  return AXi;
}

// Spec 2.3 on all rows of the chunk at once: row-wise η_j and λ_j, one shared ω schedule.
// Rows with ν_j = 0 get η_j = λ_j = 0, which keeps ξ_j = 0 throughout (the guard of spec 12.4).
template <class Real>
inline std::vector<Real> chebyshev_rows(const std::vector<Real>& Hbar, const Real* Q, const Real* K,
                                        const std::vector<Real>& gamma, const std::vector<Real>& L,
                                        const std::vector<Real>& nu, const SolverParams& p, int len, int D) {
  const Real ratio = Real(p.ratio), c = chebyshev_c(ratio);
  std::vector<Real> eta(len, Real(0)), lambda(len, Real(0));
  for (int j = 0; j < len; ++j)
    if (nu[j] > Real(0)) {
      eta[j] = chebyshev_eta(ratio, nu[j]);
      lambda[j] = ratio * nu[j];
    }
  std::vector<Real> Xi(static_cast<size_t>(len) * D), Xi_prev(Xi.size(), Real(0));
  for (int j = 0; j < len; ++j)
    for (int d = 0; d < D; ++d) Xi[j * D + d] = eta[j] * Q[j * D + d];
  Real omega = chebyshev_omega0<Real>();
  for (int it = 0; it < p.num_iter; ++it) {
    omega = chebyshev_next_omega(c, omega);
    const std::vector<Real> AXi = ridge_matvec_rows(Xi, Hbar, K, gamma, L, lambda, len, D);
    for (int j = 0; j < len; ++j)
      for (size_t e = static_cast<size_t>(j) * D; e < static_cast<size_t>(j + 1) * D; ++e)
        chebyshev_update(eta[j], omega, AXi[e], Q[e], Xi[e], Xi_prev[e]);
  }
  return Xi;
}

// M̄ <- e^{F_last} M̄ + Kᵀ diag(e^{F_last - F}) R: the inter-chunk scan of spec 3.2
// (R = K for the covariance H, R = V for the GLA state S).
template <class Real>
inline void advance_state(std::vector<Real>& M, const Real* K, const Real* R, const std::vector<Real>& F, int len,
                          int D) {
  if (len == 0) return;
  const Real whole = gating::decay_from_start(F[len - 1]);
  for (Real& e : M) e *= whole;
  for (int i = 0; i < len; ++i) {
    const Real w = gating::decay_to_end(F.data(), len, i);
    for (int a = 0; a < D; ++a) {
      const Real wk = w * K[i * D + a];
      for (int b = 0; b < D; ++b) M[a * D + b] += wk * R[i * D + b];
    }
  }
}

// O = s [diag(e^G) Q̃ S̄ + ((Q̃ Kᵀ) ⊙ L^(g)) V] (spec 3.5).
template <class Real>
inline void gla_output(const std::vector<Real>& Sbar, const std::vector<Real>& Qmix, const Real* K, const Real* V,
                       const std::vector<Real>& G, const std::vector<Real>& Lg, Real scale, int len, int D, Real* O) {
  const std::vector<Real> inter = times_state(Qmix.data(), len, Sbar, D);
  const std::vector<Real> P = row_gram(Qmix.data(), len, K, len, D);
  for (int j = 0; j < len; ++j) {
    const Real decay = gating::decay_from_start(G[j]);
    for (int d = 0; d < D; ++d) {
      Real acc = decay * inter[j * D + d];
      for (int i = 0; i <= j; ++i) acc += P[j * len + i] * Lg[j * len + i] * V[i * D + d];
      O[j * D + d] = scale * acc;
    }
  }
}

}  // namespace chunked

// Chunk-wise forward with chunk length `chunk` (any power of two >= 1). Chebyshev only: p.method
// is ignored (the operator rejects the exact solve with the chunked schedule).
template <class Real>
inline HeadForward<Real> forward_chunked(const HeadInputs<Real>& in, const SolverParams& p, int chunk) {
  const int T = in.T, D = in.D;
  HeadForward<Real> out;
  out.o.assign(static_cast<size_t>(T) * D, Real(0));
  out.x.assign(static_cast<size_t>(T) * D, Real(0));
  out.nu.assign(T, Real(0));
  std::vector<Real> Hbar(static_cast<size_t>(D) * D, Real(0)), Sbar(Hbar.size(), Real(0));  // states before the chunk
  if (in.h0) Hbar.assign(in.h0, in.h0 + D * D);
  if (in.s0) Sbar.assign(in.s0, in.s0 + D * D);

  for (int begin = 0; begin < T; begin += chunk) {
    const int len = T - begin < chunk ? T - begin : chunk;
    const Real* Q = chunked::rows(in.q, begin, D);
    const Real* K = chunked::rows(in.k, begin, D);
    const Real* V = chunked::rows(in.v, begin, D);

    // 3.1: local cumsums and masks.
    const auto F = chunked::local_cumsum<Real>([&](int t) { return in.gate_f(t); }, begin, len);
    const auto G = chunked::local_cumsum<Real>([&](int t) { return in.gate_g(t); }, begin, len);
    const std::vector<Real> L = chunked::decay_mask(F), Lg = chunked::decay_mask(G);
    const std::vector<Real> gamma = chunked::decay_from_start(F);

    // 3.3 and 3.4: ν and the solve (r = 0: x = q).
    const std::vector<Real> nu = chunked::frobenius_norms(Hbar, K, gamma, L, len, D);
    const std::vector<Real> X = p.num_iter == 0 ? std::vector<Real>(Q, Q + static_cast<size_t>(len) * D)
                                                : chunked::chebyshev_rows(Hbar, Q, K, gamma, L, nu, p, len, D);

    // 3.5: Q̃ = Q + diag(α)(X − Q), then the GLA read-out against S̄ and the chunk's own tokens.
    std::vector<Real> Qmix(static_cast<size_t>(len) * D);
    for (int j = 0; j < len; ++j) grad::mix_query_row(D, in.mix(begin + j), &Q[j * D], &X[j * D], &Qmix[j * D]);
    chunked::gla_output(Sbar, Qmix, K, V, G, Lg, Real(p.scale), len, D, out.o.data() + static_cast<size_t>(begin) * D);

    for (int j = 0; j < len; ++j) out.nu[begin + j] = nu[j];
    std::copy(X.begin(), X.end(), out.x.begin() + static_cast<std::ptrdiff_t>(begin) * D);

    // 3.2: the states before the next chunk.
    chunked::advance_state(Hbar, K, K, F, len, D);
    chunked::advance_state(Sbar, K, V, G, len, D);
  }
  out.HT = Hbar;
  out.ST = Sbar;
  return out;
}

}  // namespace reference
GKA_NAMESPACE_END
