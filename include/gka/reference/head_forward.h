// gka/reference/head_forward.h: token-by-token forward of one (sequence, head) pair (spec 2.2-2.3),
// on contiguous host arrays. Templated on the scalar (double for the oracle, float to compare).
#pragma once

#include <cmath>
#include <vector>

#include "gka/backward/mix_adjoint.h"
#include "gka/config.h"
#include "gka/solver/chebyshev_schedule.h"

GKA_NAMESPACE_BEGIN
namespace reference {

enum class SolveMethod { kChebyshev, kExact };

struct SolverParams {
  int num_iter = 30;
  double ratio = 0.02;
  double scale = 1.0;
  SolveMethod method = SolveMethod::kChebyshev;
};

// One (sequence, head): T tokens of dimension D, every array contiguous.
template <class Real>
struct HeadInputs {
  int T = 0, D = 0;
  const Real* q = nullptr;      // [T][D]
  const Real* k = nullptr;      // [T][D]
  const Real* v = nullptr;      // [T][D]
  const Real* alpha = nullptr;  // [T]; null = 1
  const Real* g = nullptr;      // [T]; null = 0 (no decay of S)
  const Real* f = nullptr;      // [T]; null = g
  const Real* h0 = nullptr;     // [D][D]; null = 0
  const Real* s0 = nullptr;     // [D][D]; null = 0
  Real gate_g(int t) const { return g ? g[t] : Real(0); }
  Real gate_f(int t) const { return f ? f[t] : gate_g(t); }
  Real mix(int t) const { return alpha ? alpha[t] : Real(1); }
};

template <class Real>
struct HeadForward {
  std::vector<Real> o, x, nu;  // [T][D], [T][D], [T]
  std::vector<Real> HT, ST;    // [D][D] final states
};

template <class Real>
inline Real frobenius_norm(const std::vector<Real>& M) {
  Real s = 0;
  for (Real e : M) s += e * e;
  return std::sqrt(s);
}

// M = decay * M + a b^T for a row-major D x D state: one token of the recurrences of spec 2.2
// (a = b = k for H, a = k and b = v for S).
template <class Real>
inline void decayed_rank1_update(int D, Real decay, const Real* a, const Real* b, Real* M) {
  for (int i = 0; i < D; ++i)
    for (int j = 0; j < D; ++j) M[i * D + j] = decay * M[i * D + j] + a[i] * b[j];
}

// y = (H + lambda I) x for a dense row-major D x D matrix H.
template <class Real>
inline void ridge_matvec(int D, const Real* H, Real lambda, const Real* x, Real* y) {
  for (int i = 0; i < D; ++i) {
    Real acc = lambda * x[i];
    for (int j = 0; j < D; ++j) acc += H[i * D + j] * x[j];
    y[i] = acc;
  }
}

// r Chebyshev steps on A = H + a nu I exactly as spec 2.3 (omega_0 = 2, xi_0 = eta q).
// nu = 0 is guarded: x = 0 (spec 12.4). r = 0 is the caller's business (x = q).
template <class Real>
inline void chebyshev_solve(int D, const Real* H, Real nu, Real ratio, int num_iter, const Real* q,
                            Real* x) {
  if (!(nu > Real(0))) {
    for (int i = 0; i < D; ++i) x[i] = 0;
    return;
  }
  const Real lambda = ratio * nu;
  const Real eta = chebyshev_eta(ratio, nu);
  const Real c = chebyshev_c(ratio);
  std::vector<Real> xi(D), xi_prev(D, Real(0)), e(D);
  for (int i = 0; i < D; ++i) xi[i] = eta * q[i];
  Real omega = chebyshev_omega0<Real>();
  for (int it = 0; it < num_iter; ++it) {
    omega = chebyshev_next_omega(c, omega);
    ridge_matvec(D, H, lambda, xi.data(), e.data());
    for (int i = 0; i < D; ++i) chebyshev_update(eta, omega, e[i], q[i], xi[i], xi_prev[i]);
  }
  for (int i = 0; i < D; ++i) x[i] = xi[i];
}

// Exact solve (H + lambda I) x = q by Cholesky, for error analysis. nu = 0 gives x = 0.
template <class Real>
inline void exact_solve(int D, const Real* H, Real lambda, const Real* q, Real* x) {
  if (!(lambda > Real(0))) {
    for (int i = 0; i < D; ++i) x[i] = 0;
    return;
  }
  std::vector<Real> L(static_cast<size_t>(D) * D, Real(0));
  for (int i = 0; i < D; ++i) {
    for (int j = 0; j <= i; ++j) {
      Real s = H[i * D + j] + (i == j ? lambda : Real(0));
      for (int p = 0; p < j; ++p) s -= L[i * D + p] * L[j * D + p];
      L[i * D + j] = (i == j) ? std::sqrt(s) : s / L[j * D + j];
    }
  }
  std::vector<Real> y(D);
  for (int i = 0; i < D; ++i) {
    Real s = q[i];
    for (int p = 0; p < i; ++p) s -= L[i * D + p] * y[p];
    y[i] = s / L[i * D + i];
  }
  for (int i = D - 1; i >= 0; --i) {
    Real s = y[i];
    for (int p = i + 1; p < D; ++p) s -= L[p * D + i] * x[p];
    x[i] = s / L[i * D + i];
  }
}

// The solve of one token, with the r = 0 and nu = 0 conventions of spec 12.1 / 12.4.
template <class Real>
inline void solve_token(int D, const Real* H, Real nu, const SolverParams& p, const Real* q, Real* x) {
  if (p.num_iter == 0) {
    for (int i = 0; i < D; ++i) x[i] = q[i];
  } else if (p.method == SolveMethod::kExact) {
    exact_solve(D, H, Real(p.ratio) * nu, q, x);
  } else {
    chebyshev_solve(D, H, nu, Real(p.ratio), p.num_iter, q, x);
  }
}

// Sequential forward (spec 2.2): H_t, nu_t, x_t, q~_t, S_t, o_t for t = 0..T-1.
// frozen_nu (optional, [T]): the solver uses these values instead of ||H_t||_F (so lambda_t =
// a * frozen_nu[t] is a constant). This is the function whose derivative the bp_lambda = false
// backward computes, which lets finite differences check it; out.nu still reports ||H_t||_F.
template <class Real>
inline HeadForward<Real> forward_sequential(const HeadInputs<Real>& in, const SolverParams& p,
                                            const Real* frozen_nu = nullptr) {
  const int T = in.T, D = in.D;
  HeadForward<Real> out;
  out.o.assign(static_cast<size_t>(T) * D, Real(0));
  out.x.assign(static_cast<size_t>(T) * D, Real(0));
  out.nu.assign(T, Real(0));
  std::vector<Real> H(static_cast<size_t>(D) * D, Real(0)), S(static_cast<size_t>(D) * D, Real(0));
  if (in.h0) H.assign(in.h0, in.h0 + D * D);
  if (in.s0) S.assign(in.s0, in.s0 + D * D);
  std::vector<Real> qmix(D);
  for (int t = 0; t < T; ++t) {
    const Real* q = in.q + t * D;
    const Real* k = in.k + t * D;
    const Real* v = in.v + t * D;
    decayed_rank1_update(D, std::exp(in.gate_f(t)), k, k, H.data());
    decayed_rank1_update(D, std::exp(in.gate_g(t)), k, v, S.data());
    const Real nu = frobenius_norm(H);
    out.nu[t] = nu;
    Real* x = out.x.data() + t * D;
    solve_token(D, H.data(), frozen_nu ? frozen_nu[t] : nu, p, q, x);
    grad::mix_query_row(D, in.mix(t), q, x, qmix.data());
    for (int j = 0; j < D; ++j) {
      Real acc = 0;
      for (int i = 0; i < D; ++i) acc += S[i * D + j] * qmix[i];
      out.o[t * D + j] = Real(p.scale) * acc;
    }
  }
  out.HT = H;
  out.ST = S;
  return out;
}

}  // namespace reference
GKA_NAMESPACE_END
