// gka/reference/head_backward_chunked.h: the chunk-wise backward of one (sequence, head) pair as
// spec 4.6 schedules it (Passes A-F, pre-negated, cross-chunk lambda pass E) and the chunked GLA
// adjoint of spec 4.2 (steps 1-5). This is the schedule the GPU backward mirrors; in exact
// arithmetic it equals backward_sequential (head_backward.h), which the tests check to ~1e-12.
//
// Conventions: chunk n holds tokens [nC, min(T, nC + C)); inside it j = 0..C'-1 and
//   F_j = sum_{i<=j} f_i (chunk-local),  Gamma_j = e^{F_j},  L_ji = e^{F_j - F_i} (i <= j),  U = L^T,
//   kappa_i = e^{F_{C'-1} - F_i} k_i  (the key decayed to the chunk end).
// Only differences of chunk-local cumsums are exponentiated (spec 12.2), so strong decays give
// zeros, never inf or NaN. Incoming final-state gradients (spec 12.12) enter as the initial values
// of the reverse scans: R_{N-1} = -dH_T (pre-negated) and S^_end(N-1) = dS_T.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "gka/backward/mix_adjoint.h"
#include "gka/backward/ridge_adjoint.h"
#include "gka/backward/state_adjoint.h"
#include "gka/config.h"
#include "gka/gating/chunk_cumsum.h"
#include "gka/reference/head_backward.h"
#include "gka/reference/head_chunked.h"
#include "gka/reference/head_forward.h"
#include "gka/solver/chebyshev_schedule.h"

GKA_NAMESPACE_BEGIN
namespace reference {

// One chunk: tokens [t0, t0 + len) and the chunk-local inclusive cumsum of a log-decay.
template <class Real>
struct Chunk {
  int t0 = 0, len = 0;
  std::vector<Real> F;  // [len]
  Real end() const { return F[len - 1]; }                                     // F_{C'}
  Real gamma(int j) const { return gating::decay_from_start(F[j]); }          // Gamma_j
  Real end_decay() const { return gating::decay_from_start(end()); }          // e^{F_{C'}}
  Real mask(int j, int i) const { return gating::decay_mask(F.data(), j, i); }  // L_ji
  Real to_end(int i) const { return gating::decay_to_end(F.data(), len, i); }
};

// Splits T tokens into chunks of C and takes the chunk-local cumsums of gate(t).
template <class Real, class Gate>
inline std::vector<Chunk<Real>> make_chunks(int T, int C, Gate gate) {
  std::vector<Chunk<Real>> chunks;
  for (int t0 = 0; t0 < T; t0 += C) {
    Chunk<Real> c;
    c.t0 = t0;
    c.len = std::min(C, T - t0);
    c.F.resize(c.len);
    gating::chunk_local_cumsum(gate, t0, c.len, c.F.data());
    chunks.push_back(c);
  }
  return chunks;
}

namespace chunked_detail {

template <class Real>
inline Real dot(int D, const Real* a, const Real* b) {
  Real s = 0;
  for (int i = 0; i < D; ++i) s += a[i] * b[i];
  return s;
}
// y = M x (M row-major D x D), or y = M^T x when transpose.
template <class Real>
inline void matvec(int D, const Real* M, const Real* x, Real* y, bool transpose = false) {
  for (int i = 0; i < D; ++i) {
    Real acc = 0;
    for (int j = 0; j < D; ++j) acc += (transpose ? M[j * D + i] : M[i * D + j]) * x[j];
    y[i] = acc;
  }
}

// State scan of spec 3.2 with "value" rows V (V = K for H, V for S): returns the N + 1 states
// before every chunk, the last one being the final state.
template <class Real>
inline std::vector<std::vector<Real>> scan_states(int D, const std::vector<Chunk<Real>>& chunks, const Real* K,
                                                  const Real* V, const Real* init) {
  const int DD = D * D;
  std::vector<std::vector<Real>> states(chunks.size() + 1, std::vector<Real>(DD, Real(0)));
  if (init) states[0].assign(init, init + DD);
  for (size_t n = 0; n < chunks.size(); ++n) {
    const Chunk<Real>& c = chunks[n];
    states[n + 1] = states[n];
    chunked::advance_state(states[n + 1], K + c.t0 * D, V + c.t0 * D, c.F, c.len, D);
  }
  return states;
}

}  // namespace chunked_detail

// ---- Pass A: H-bar_n before every chunk (spec 3.2, v := k); [N] is H_T ----------------------------
template <class Real>
inline std::vector<std::vector<Real>> covariance_chunk_states(int D, const std::vector<Chunk<Real>>& chunks,
                                                              const Real* k, const Real* h0) {
  return chunked_detail::scan_states(D, chunks, k, k, h0);
}

// ---- Pass B: Z = CH(A, dX) per chunk with the stored nu (spec 4.4, 4.6) ---------------------------
// The same chunked Chebyshev program as the forward (head_chunked.h), run on dX. Rows with nu = 0
// (guard, spec 12.4) and num_iter = 0 give z = 0. With SolveMethod::kExact the rows' H_j are formed
// and solved exactly instead (for gradient checks).
template <class Real>
inline std::vector<Real> solve_adjoint_chunked(int T, int D, const std::vector<Chunk<Real>>& chunks, const Real* K,
                                               const std::vector<std::vector<Real>>& Hbar, const Real* nu,
                                               const Real* dX, const SolverParams& p) {
  std::vector<Real> Z(static_cast<size_t>(T) * D, Real(0));
  if (p.num_iter == 0) return Z;  // no row has a solve adjoint
  for (size_t n = 0; n < chunks.size(); ++n) {
    const Chunk<Real>& c = chunks[n];
    const int len = c.len;
    const std::vector<Real> nu_c(nu + c.t0, nu + c.t0 + len);
    std::vector<Real> Zc(static_cast<size_t>(len) * D, Real(0));
    if (p.method == SolveMethod::kExact) {
      std::vector<Real> Hj(D * D);
      for (int j = 0; j < len; ++j) {  // H_j = Gamma_j Hbar + sum_{i<=j} L_ji k_i k_i^T
        for (int e = 0; e < D * D; ++e) Hj[e] = c.gamma(j) * Hbar[n][e];
        for (int i = 0; i <= j; ++i) {
          const Real* k = K + (c.t0 + i) * D;
          for (int a = 0; a < D; ++a)
            for (int b = 0; b < D; ++b) Hj[a * D + b] += c.mask(j, i) * k[a] * k[b];
        }
        exact_solve(D, Hj.data(), nu_c[j] > Real(0) ? Real(p.ratio) * nu_c[j] : Real(0), dX + (c.t0 + j) * D,
                    &Zc[j * D]);
      }
    } else {
      Zc = chunked::chebyshev_rows(Hbar[n], dX + c.t0 * D, K + c.t0 * D, chunked::decay_from_start(c.F),
                                   chunked::decay_mask(c.F), nu_c, p, len, D);
    }
    for (int j = 0; j < len; ++j)
      if (grad::has_solve_adjoint(p.num_iter, nu_c[j])) std::copy(&Zc[j * D], &Zc[(j + 1) * D], &Z[(c.t0 + j) * D]);
  }
  return Z;
}

// ---- Passes C-F: covariance adjoint (spec 4.6, 4.7) -------------------------------------------------
template <class Real>
struct CovarianceGrads {
  std::vector<Real> dk_h;  // [T][D]
  std::vector<Real> df;    // [T] gradient w.r.t. f (H part only)
  std::vector<Real> dh0;   // [D][D] symmetrised, lambda term included
};

template <class Real>
inline CovarianceGrads<Real> covariance_adjoint_chunked(int T, int D, const std::vector<Chunk<Real>>& chunks,
                                                        const Real* K, const std::vector<std::vector<Real>>& Hbar,
                                                        const Real* X, const Real* Z, const Real* nu, Real ratio,
                                                        bool bp_lambda, const Real* d_ht) {
  using chunked_detail::dot;
  using chunked_detail::matvec;
  const int N = static_cast<int>(chunks.size()), DD = D * D;
  std::vector<Real> dk_pre(static_cast<size_t>(T) * D, Real(0)), dF_pre(T, Real(0));

  // Pass C: R[n + 1] = R-bar_n = sum_{t after chunk n} e^{F_t - F_end(n)} z_t x_t^T, started from
  // -dH_T; R[0] = R-bar_{-1} feeds dH0.
  std::vector<std::vector<Real>> R(N + 1, std::vector<Real>(DD, Real(0)));
  if (d_ht)
    for (int e = 0; e < DD; ++e) R[N][e] = -d_ht[e];
  for (int n = N - 1; n >= 0; --n) {
    const Chunk<Real>& c = chunks[n];
    const Real decay = c.end_decay();
    for (int e = 0; e < DD; ++e) R[n][e] = decay * R[n + 1][e];
    for (int j = 0; j < c.len; ++j) {
      const Real *z = Z + (c.t0 + j) * D, *x = X + (c.t0 + j) * D, gamma = c.gamma(j);
      for (int a = 0; a < D; ++a)
        for (int b = 0; b < D; ++b) R[n][a * D + b] += gamma * z[a] * x[b];
    }
  }

  // Pass D: intra-chunk terms, independent per chunk. Pi[n] = sum_{j in n} Gamma_j w_j H_j.
  std::vector<std::vector<Real>> Pi(N, std::vector<Real>(DD, Real(0)));
  for (int n = 0; n < N; ++n) {
    const Chunk<Real>& c = chunks[n];
    const int len = c.len;
    const std::vector<Real>& Hb = Hbar[n];
    const std::vector<Real>& Rn = R[n + 1];
    auto k = [&](int i) { return K + (c.t0 + i) * D; };
    auto x = [&](int i) { return X + (c.t0 + i) * D; };
    auto z = [&](int i) { return Z + (c.t0 + i) * D; };
    auto U = [&](int i, int j) { return c.mask(j, i); };  // U_ij = e^{F_j - F_i}, j >= i

    std::vector<Real> w(len, Real(0)), u_nu(len, Real(0));  // w_j = 2 u_j / nu_j, u_j nu_j
    if (bp_lambda)
      for (int j = 0; j < len; ++j) {
        const grad::RidgeAdjoint<Real> r = grad::ridge_adjoint(ratio, dot(D, z(j), x(j)), nu[c.t0 + j]);
        w[j] = r.w;
        u_nu[j] = r.u_nu;
      }
    std::vector<Real> kappa(len * D);
    for (int i = 0; i < len; ++i)
      for (int a = 0; a < D; ++a) kappa[i * D + a] = c.to_end(i) * k(i)[a];

    // P = (K X^T) o U, Q' = K Z^T, Y = P o Q'; b_i = sum_j U_ij Gamma_j w_j; W = U diag(w) U^T.
    std::vector<Real> P(len * len, Real(0)), Qp(len * len), Y(len * len), b(len, Real(0)), W(len * len, Real(0));
    for (int i = 0; i < len; ++i)
      for (int j = 0; j < len; ++j) {
        Qp[i * len + j] = dot(D, k(i), z(j));
        P[i * len + j] = dot(D, k(i), x(j)) * U(i, j);
        Y[i * len + j] = P[i * len + j] * Qp[i * len + j];
        b[i] += U(i, j) * c.gamma(j) * w[j];
      }
    for (int i = 0; i < len; ++i)
      for (int l = 0; l < len; ++l)
        for (int j = 0; j < len; ++j) W[i * len + l] += U(i, j) * w[j] * U(l, j);

    std::vector<Real> tmp(D), tmp2(D), lam_part(D);
    for (int i = 0; i < len; ++i) {
      Real* dk = &dk_pre[(c.t0 + i) * D];
      // rank-1 part: (R + R^T) kappa_i + sum_j P_ij z_j + sum_j (Q' o U)_ij x_j
      matvec(D, Rn.data(), &kappa[i * D], tmp.data());
      matvec(D, Rn.data(), &kappa[i * D], tmp2.data(), /*transpose=*/true);
      for (int a = 0; a < D; ++a) dk[a] = tmp[a] + tmp2[a];
      for (int j = 0; j < len; ++j)
        for (int a = 0; a < D; ++a) dk[a] += P[i * len + j] * z(j)[a] + Qp[i * len + j] * U(i, j) * x(j)[a];
      // lambda part, intra: b_i Hbar k_i + sum_l ((K K^T) o W)_il k_l
      matvec(D, Hb.data(), k(i), tmp.data());
      for (int a = 0; a < D; ++a) lam_part[a] = b[i] * tmp[a];
      for (int l = 0; l < len; ++l) {
        const Real coef = dot(D, k(i), k(l)) * W[i * len + l];
        for (int a = 0; a < D; ++a) lam_part[a] += coef * k(l)[a];
      }
      for (int a = 0; a < D; ++a) dk[a] += lam_part[a];

      // dF_pre_i: z^T H^intra x - sum_l U_il (k^T x_l)(k^T z_l) + Gamma z^T Hbar x - kappa^T R k
      //           + u nu - 1/2 k^T (lambda part)
      Real dF = 0;
      for (int l = 0; l < len; ++l) dF += Y[l * len + i] - Y[i * len + l];
      matvec(D, Hb.data(), x(i), tmp.data());
      dF += c.gamma(i) * dot(D, z(i), tmp.data());
      matvec(D, Rn.data(), k(i), tmp.data());
      dF -= dot(D, &kappa[i * D], tmp.data());
      dF += u_nu[i] - Real(0.5) * dot(D, k(i), lam_part.data());
      dF_pre[c.t0 + i] = dF;
    }
    // At the chunk end: <R, Hbar_{n+1}> = sum_i kappa_i^T R k_i + e^{F_C'} <R, Hbar_n>.
    {
      Real end_term = c.end_decay() * dot(DD, Rn.data(), Hb.data());
      for (int i = 0; i < len; ++i) {
        matvec(D, Rn.data(), k(i), tmp.data());
        end_term += dot(D, &kappa[i * D], tmp.data());
      }
      dF_pre[c.t0 + len - 1] += end_term;
    }
    // Pi_n = (sum_j Gamma_j^2 w_j) Hbar + K^T diag(b) K
    if (bp_lambda) {
      Real s = 0;
      for (int j = 0; j < len; ++j) s += std::exp(2 * c.F[j]) * w[j];
      for (int e = 0; e < DD; ++e) Pi[n][e] = s * Hb[e];
      for (int i = 0; i < len; ++i)
        for (int a = 0; a < D; ++a)
          for (int bb = 0; bb < D; ++bb) Pi[n][a * D + bb] += b[i] * k(i)[a] * k(i)[bb];
    }
  }

  // Pass E: cross-chunk lambda term, sequential over chunks. B = sum_{t after chunk n}
  // e^{F_t - F_end(n)} w_t H_t (symmetric).
  std::vector<Real> B(DD, Real(0)), tmp(D);
  if (bp_lambda)
    for (int n = N - 1; n >= 0; --n) {
      const Chunk<Real>& c = chunks[n];
      for (int i = 0; i < c.len; ++i) {
        const Real* k = K + (c.t0 + i) * D;
        matvec(D, B.data(), k, tmp.data());
        const Real kappa_scale = c.to_end(i);
        for (int a = 0; a < D; ++a) dk_pre[(c.t0 + i) * D + a] += kappa_scale * tmp[a];
        dF_pre[c.t0 + i] -= Real(0.5) * kappa_scale * dot(D, k, tmp.data());
      }
      dF_pre[c.t0 + c.len - 1] += Real(0.5) * dot(DD, B.data(), Hbar[n + 1].data());
      const Real decay = c.end_decay();
      for (int e = 0; e < DD; ++e) B[e] = decay * B[e] + Pi[n][e];
    }

  // Pass F: flip the sign; chunk-local reverse cumsum of dF gives df.
  CovarianceGrads<Real> out;
  out.dk_h.resize(dk_pre.size());
  for (size_t e = 0; e < dk_pre.size(); ++e) out.dk_h[e] = -dk_pre[e];
  for (Real& e : dF_pre) e = -e;
  out.df.assign(T, Real(0));
  for (const Chunk<Real>& c : chunks) gating::chunk_reverse_cumsum(&dF_pre[c.t0], c.len, &out.df[c.t0]);
  // spec 4.7: dH0 = -sym(R-bar_{-1}) - B/2 (lambda term included, unlike the reference).
  out.dh0.assign(DD, Real(0));
  for (int a = 0; a < D; ++a)
    for (int bb = 0; bb < D; ++bb)
      out.dh0[a * D + bb] = -grad::symmetric_part(R[0][a * D + bb], R[0][bb * D + a]) - Real(0.5) * B[a * D + bb];
  return out;
}

// ---- GLA adjoint, chunk-wise (spec 4.2 steps 1-5) ------------------------------------------------
template <class Real>
struct GlaGrads {
  std::vector<Real> dqmix, dk, dv;  // [T][D]: d q~, the S part of dk, dv
  std::vector<Real> dg;             // [T] gradient w.r.t. g (S part only)
  std::vector<Real> ds0;            // [D][D]
};

template <class Real>
inline GlaGrads<Real> gla_adjoint_chunked(int T, int D, const std::vector<Chunk<Real>>& chunks, const Real* Qmix,
                                          const Real* K, const Real* V, const Real* s0, const Real* dO,
                                          const Real* d_st, Real scale) {
  using chunked_detail::dot;
  using chunked_detail::matvec;
  const int N = static_cast<int>(chunks.size()), DD = D * D;
  // Step 1: S-bar_n before every chunk; [N] is S_T.
  const std::vector<std::vector<Real>> Sbar = chunked_detail::scan_states(D, chunks, K, V, s0);
  // Step 2: reverse scan for S^ at chunk ends; Send[n + 1] = gradient w.r.t. S-bar_{n+1} from later
  // tokens (Send[N] = dS_T), Send[0] = dS0.
  std::vector<std::vector<Real>> Send(N + 1, std::vector<Real>(DD, Real(0)));
  if (d_st) Send[N].assign(d_st, d_st + DD);
  for (int n = N - 1; n >= 0; --n) {
    const Chunk<Real>& c = chunks[n];
    const Real decay = c.end_decay();
    for (int e = 0; e < DD; ++e) Send[n][e] = decay * Send[n + 1][e];
    for (int j = 0; j < c.len; ++j) {
      const Real *q = Qmix + (c.t0 + j) * D, *d_o = dO + (c.t0 + j) * D, w = scale * c.gamma(j);
      for (int a = 0; a < D; ++a)
        for (int b = 0; b < D; ++b) Send[n][a * D + b] += w * q[a] * d_o[b];
    }
  }

  GlaGrads<Real> out;
  out.dqmix.assign(static_cast<size_t>(T) * D, Real(0));
  out.dk = out.dv = out.dqmix;
  out.dg.assign(T, Real(0));
  std::vector<Real> dG(T, Real(0)), tmp(D);
  for (int n = 0; n < N; ++n) {
    const Chunk<Real>& c = chunks[n];
    const int len = c.len;
    auto row = [&](const Real* M, int i) { return M + (c.t0 + i) * D; };
    // Step 3: dQ~ = s diag(e^G) dO Sbar^T + (s dO V^T o L) K
    //         dK  = diag(e^{G_C'-G}) V Send^T + (s dO V^T o L)^T Q~
    //         dV  = diag(e^{G_C'-G}) K Send + (s Q~ K^T o L)^T dO
    for (int j = 0; j < len; ++j) {
      Real* dq = &out.dqmix[(c.t0 + j) * D];
      Real* dk = &out.dk[(c.t0 + j) * D];
      Real* dv = &out.dv[(c.t0 + j) * D];
      matvec(D, Sbar[n].data(), row(dO, j), tmp.data());
      for (int a = 0; a < D; ++a) dq[a] = scale * c.gamma(j) * tmp[a];
      matvec(D, Send[n + 1].data(), row(V, j), tmp.data());
      for (int a = 0; a < D; ++a) dk[a] = c.to_end(j) * tmp[a];
      matvec(D, Send[n + 1].data(), row(K, j), tmp.data(), /*transpose=*/true);
      for (int a = 0; a < D; ++a) dv[a] = c.to_end(j) * tmp[a];
      for (int i = 0; i < len; ++i) {
        const Real l_ji = scale * c.mask(j, i), l_ij = scale * c.mask(i, j);
        const Real dov_ji = dot(D, row(dO, j), row(V, i)), dov_ij = dot(D, row(dO, i), row(V, j));
        const Real qk_ij = dot(D, row(Qmix, i), row(K, j));
        for (int a = 0; a < D; ++a) {
          dq[a] += l_ji * dov_ji * row(K, i)[a];
          dk[a] += l_ij * dov_ij * row(Qmix, i)[a];
          dv[a] += l_ij * qk_ij * row(dO, i)[a];
        }
      }
      // Step 4 (intra part): dG_j = q~_j^T dq~_j - k_j^T dk_j
      dG[c.t0 + j] = dot(D, row(Qmix, j), dq) - dot(D, row(K, j), dk);
    }
    // Step 4 (inter part) at the chunk's last position: <Send_n, Sbar_{n+1}>.
    dG[c.t0 + len - 1] += dot(DD, Send[n + 1].data(), Sbar[n + 1].data());
    // Step 5: chunk-local reverse cumsum.
    gating::chunk_reverse_cumsum(&dG[c.t0], len, &out.dg[c.t0]);
  }
  out.ds0 = Send[0];
  return out;
}

// ---- the whole head, chunk-wise --------------------------------------------------------------------
// Same contract as backward_sequential (head_backward.h). C: any power of two >= 1.
template <class Real>
inline HeadGrads<Real> backward_chunked(const HeadInputs<Real>& in, const HeadGradInputs<Real>& gin,
                                        const SolverParams& p, bool bp_lambda, int C) {
  const int T = in.T, D = in.D;
  // The forward's x and nu, recomputed when not saved.
  HeadForward<Real> fwd;
  if (!gin.x || !gin.nu) fwd = forward_sequential(in, p);
  const Real* X = gin.x ? gin.x : fwd.x.data();
  const Real* nu = gin.nu ? gin.nu : fwd.nu.data();

  const auto chunks_h = make_chunks<Real>(T, C, [&](int t) { return in.gate_f(t); });
  const auto chunks_s = make_chunks<Real>(T, C, [&](int t) { return in.gate_g(t); });

  std::vector<Real> Qmix(static_cast<size_t>(T) * D);
  for (int t = 0; t < T; ++t) grad::mix_query_row(D, in.mix(t), in.q + t * D, X + t * D, &Qmix[t * D]);
  GlaGrads<Real> gla = gla_adjoint_chunked(T, D, chunks_s, Qmix.data(), in.k, in.v, in.s0, gin.d_o, gin.d_st,
                                           Real(p.scale));

  // alpha-mix adjoint (spec 4.3).
  HeadGrads<Real> g;
  g.dq.assign(static_cast<size_t>(T) * D, Real(0));
  g.dalpha.assign(T, Real(0));
  std::vector<Real> dX(static_cast<size_t>(T) * D);
  for (int t = 0; t < T; ++t)
    g.dalpha[t] = grad::mix_adjoint_row(D, in.mix(t), &gla.dqmix[t * D], in.q + t * D, X + t * D, p.num_iter,
                                            &dX[t * D], &g.dq[t * D]);

  // Pass A, Pass B, Passes C-F.
  const auto Hbar = covariance_chunk_states(D, chunks_h, in.k, in.h0);
  g.z = solve_adjoint_chunked(T, D, chunks_h, in.k, Hbar, nu, dX.data(), p);
  for (size_t e = 0; e < g.dq.size(); ++e) g.dq[e] += grad::solve_query_grad(p.num_iter, dX[e], g.z[e]);
  CovarianceGrads<Real> cov = covariance_adjoint_chunked(T, D, chunks_h, in.k, Hbar, X, g.z.data(), nu,
                                                         Real(p.ratio), bp_lambda, gin.d_ht);

  g.dk_h = cov.dk_h;
  g.dk.resize(g.dq.size());
  for (size_t e = 0; e < g.dk.size(); ++e) g.dk[e] = gla.dk[e] + cov.dk_h[e];
  g.dv = gla.dv;
  g.dg = gla.dg;
  g.df = cov.df;
  if (!in.f)
    for (int t = 0; t < T; ++t) g.dg[t] += g.df[t];
  g.dh0 = cov.dh0;
  g.ds0 = gla.ds0;
  return g;
}

}  // namespace reference
GKA_NAMESPACE_END
