// gka/reference/head_backward.h: token-by-token backward of one (sequence, head) pair with the
// global formulas of spec 4.2-4.5, on contiguous host arrays.
//
// Gradients are those of spec 12.9: implicit differentiation through the solve, with
//   z_t = solve(A_t, dx_t)            (the forward's solver and nu_t; exact gradients with kExact)
//   Psi_t = -z_t x_t^T - (u_t / nu_t) H_t,  u_t = a z_t^T x_t      (second term only with bp_lambda)
//   Phi_t = Psi_t + e^{f_{t+1}} Phi_{t+1},  Phi_{T+1} = dH_T        (spec 12.12)
//   S^_t  = s q~_t do_t^T + e^{g_{t+1}} S^_{t+1},  S^_{T+1} = dS_T
// Gate gradients use the local form df_t = e^{f_t} <Phi_t, H_{t-1}>, dg_t = e^{g_t} <S^_t, S_{t-1}>,
// so a decay that underflows to 0 gives an exact 0 gradient.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "gka/backward/mix_adjoint.h"
#include "gka/backward/ridge_adjoint.h"
#include "gka/backward/state_adjoint.h"
#include "gka/config.h"
#include "gka/reference/head_forward.h"

GKA_NAMESPACE_BEGIN
namespace reference {

// What the backward reads besides HeadInputs.
template <class Real>
struct HeadGradInputs {
  const Real* d_o = nullptr;   // [T][D] gradient of o (required)
  const Real* d_ht = nullptr;  // [D][D] gradient of the final H_T; null = 0
  const Real* d_st = nullptr;  // [D][D] gradient of the final S_T; null = 0
  const Real* x = nullptr;     // [T][D] the forward's x; null = recomputed with the solver
  const Real* nu = nullptr;    // [T] the forward's nu; null = recomputed as ||H_t||_F
};

// Gradients of one head. dg holds the S part and df the H part of the gate gradients, except that
// when the head has no separate f (HeadInputs::f null, so f = g) dg is the total and df still holds
// the H part for inspection. dk_h and z expose intermediate results for the chunked cross-check.
template <class Real>
struct HeadGrads {
  std::vector<Real> dq, dk, dv;       // [T][D]
  std::vector<Real> dalpha, dg, df;   // [T]
  std::vector<Real> dh0, ds0;         // [D][D]; dh0 symmetrised (spec 12.13)
  std::vector<Real> dk_h;             // [T][D] covariance part of dk (spec 4.5)
  std::vector<Real> z;                // [T][D] solve adjoint z_t (spec 4.4)
};

namespace detail {

// States after every token of [t0, t1), recomputed from the state before t0; out[0] = before t0.
// H and S share the loop; both are cheap next to the solves.
template <class Real>
inline void recompute_block(const HeadInputs<Real>& in, int t0, int t1, const Real* H_before,
                            const Real* S_before, std::vector<Real>& Hs, std::vector<Real>& Ss) {
  const int D = in.D, DD = D * D;
  Hs.assign(static_cast<size_t>(t1 - t0 + 1) * DD, Real(0));
  Ss.assign(Hs.size(), Real(0));
  std::copy(H_before, H_before + DD, Hs.begin());
  std::copy(S_before, S_before + DD, Ss.begin());
  for (int t = t0; t < t1; ++t) {
    const Real *k = in.k + t * D, *v = in.v + t * D;
    Real *Hn = &Hs[(t - t0 + 1) * DD], *Sn = &Ss[(t - t0 + 1) * DD];
    std::copy(Hn - DD, Hn, Hn);
    std::copy(Sn - DD, Sn, Sn);
    decayed_rank1_update(D, std::exp(in.gate_f(t)), k, k, Hn);
    decayed_rank1_update(D, std::exp(in.gate_g(t)), k, v, Sn);
  }
}

}  // namespace detail

// The solve adjoint of one token (spec 4.4, 12.4, 12.13): z = A^{-1} dx with the forward's solver,
// or 0 where no solve depends on H (nu = 0 guard, num_iter = 0).
template <class Real>
inline void solve_adjoint_token(int D, const Real* H, Real nu, const SolverParams& p,
                                const Real* dx, Real* z) {
  if (!grad::has_solve_adjoint(p.num_iter, nu)) {
    for (int i = 0; i < D; ++i) z[i] = 0;
    return;
  }
  solve_token(D, H, nu, p, dx, z);
}

template <class Real>
inline HeadGrads<Real> backward_sequential(const HeadInputs<Real>& in, const HeadGradInputs<Real>& gin,
                                           const SolverParams& p, bool bp_lambda) {
  const int T = in.T, D = in.D, DD = D * D;
  const Real s = Real(p.scale), a = Real(p.ratio);
  HeadGrads<Real> g;
  g.dq.assign(static_cast<size_t>(T) * D, Real(0));
  g.dk = g.dv = g.dk_h = g.z = g.dq;
  g.dalpha.assign(T, Real(0));
  g.dg = g.df = g.dalpha;

  // Forward sweep: checkpoint the states every kBlock tokens; recompute nu and x when not given.
  constexpr int kBlock = 64;
  const int num_blocks = (T + kBlock - 1) / kBlock;
  std::vector<Real> H_ckpt(static_cast<size_t>(num_blocks) * DD), S_ckpt(H_ckpt.size());
  std::vector<Real> nu(T), x(static_cast<size_t>(T) * D);
  {
    std::vector<Real> H(DD, Real(0)), S(DD, Real(0));
    if (in.h0) H.assign(in.h0, in.h0 + DD);
    if (in.s0) S.assign(in.s0, in.s0 + DD);
    for (int t = 0; t < T; ++t) {
      if (t % kBlock == 0) {
        std::copy(H.begin(), H.end(), H_ckpt.begin() + (t / kBlock) * DD);
        std::copy(S.begin(), S.end(), S_ckpt.begin() + (t / kBlock) * DD);
      }
      const Real *k = in.k + t * D, *v = in.v + t * D;
      decayed_rank1_update(D, std::exp(in.gate_f(t)), k, k, H.data());
      decayed_rank1_update(D, std::exp(in.gate_g(t)), k, v, S.data());
      nu[t] = gin.nu ? gin.nu[t] : frobenius_norm(H);
      if (gin.x)
        std::copy(gin.x + t * D, gin.x + (t + 1) * D, x.begin() + t * D);
      else
        solve_token(D, H.data(), nu[t], p, in.q + t * D, x.data() + t * D);
    }
  }

  // Reverse sweep. carry_h = e^{f_{t+1}} Phi_{t+1}, carry_s = e^{g_{t+1}} S^_{t+1}.
  std::vector<Real> carry_h(DD, Real(0)), carry_s(DD, Real(0));
  if (gin.d_ht) carry_h.assign(gin.d_ht, gin.d_ht + DD);
  if (gin.d_st) carry_s.assign(gin.d_st, gin.d_st + DD);
  std::vector<Real> Hs, Ss, Phi(DD), Shat(DD), qmix(D), dqmix(D), dx(D);
  for (int blk = num_blocks - 1; blk >= 0; --blk) {
    const int t0 = blk * kBlock, t1 = std::min(T, t0 + kBlock);
    detail::recompute_block(in, t0, t1, &H_ckpt[blk * DD], &S_ckpt[blk * DD], Hs, Ss);
    for (int t = t1 - 1; t >= t0; --t) {
      const Real *q = in.q + t * D, *k = in.k + t * D, *v = in.v + t * D, *d_o = gin.d_o + t * D;
      const Real* xt = x.data() + t * D;
      const Real *H = &Hs[(t - t0 + 1) * DD], *H_prev = &Hs[(t - t0) * DD];
      const Real *S = &Ss[(t - t0 + 1) * DD], *S_prev = &Ss[(t - t0) * DD];
      const Real alpha = in.mix(t);

      // GLA adjoint (spec 4.2).
      grad::mix_query_row(D, alpha, q, xt, qmix.data());
      for (int i = 0; i < D; ++i) {
        Real acc = 0;
        for (int j = 0; j < D; ++j) acc += S[i * D + j] * d_o[j];
        dqmix[i] = s * acc;
      }
      for (int i = 0; i < D; ++i)
        for (int j = 0; j < D; ++j) Shat[i * D + j] = s * qmix[i] * d_o[j] + carry_s[i * D + j];
      for (int i = 0; i < D; ++i) {
        Real dk_i = 0, dv_i = 0;
        for (int j = 0; j < D; ++j) {
          dk_i += Shat[i * D + j] * v[j];
          dv_i += Shat[j * D + i] * k[j];
        }
        g.dk[t * D + i] = dk_i;
        g.dv[t * D + i] = dv_i;
      }
      g.dg[t] = grad::decayed_state_adjoint_step(D, std::exp(in.gate_g(t)), Shat.data(), S_prev, carry_s.data());

      // alpha-mix adjoint (spec 4.3).
      g.dalpha[t] = grad::mix_adjoint_row(D, alpha, dqmix.data(), q, xt, p.num_iter, dx.data(), &g.dq[t * D]);

      // Solve adjoint (spec 4.4).
      Real* z = g.z.data() + t * D;
      solve_adjoint_token(D, H, nu[t], p, dx.data(), z);
      for (int i = 0; i < D; ++i) g.dq[t * D + i] += grad::solve_query_grad(p.num_iter, dx[i], z[i]);

      // Covariance adjoint (spec 4.5): Phi_t = Psi_t + carry_h.
      Real lam_coef = 0;  // u_t / nu_t
      if (bp_lambda) {
        Real zx = 0;
        for (int i = 0; i < D; ++i) zx += z[i] * xt[i];
        lam_coef = grad::ridge_adjoint(a, zx, nu[t]).u_over_nu();
      }
      for (int i = 0; i < D; ++i)
        for (int j = 0; j < D; ++j)
          Phi[i * D + j] = -z[i] * xt[j] - lam_coef * H[i * D + j] + carry_h[i * D + j];
      for (int i = 0; i < D; ++i) {
        Real acc = 0;
        for (int j = 0; j < D; ++j) acc += (Phi[i * D + j] + Phi[j * D + i]) * k[j];
        g.dk_h[t * D + i] = acc;
        g.dk[t * D + i] += acc;
      }
      g.df[t] = grad::decayed_state_adjoint_step(D, std::exp(in.gate_f(t)), Phi.data(), H_prev, carry_h.data());
    }
  }

  g.ds0 = carry_s;
  g.dh0.assign(DD, Real(0));
  for (int i = 0; i < D; ++i)
    for (int j = 0; j < D; ++j) g.dh0[i * D + j] = grad::symmetric_part(carry_h[i * D + j], carry_h[j * D + i]);
  if (!in.f)  // f = g: one gate, report the total in dg
    for (int t = 0; t < T; ++t) g.dg[t] += g.df[t];
  return g;
}

}  // namespace reference
GKA_NAMESPACE_END
