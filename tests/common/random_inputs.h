// tests/common/random_inputs.h: realistic random GKA inputs (spec 1.2 steps 4-7) on host float64
// arrays in the contiguous layouts of gka/args.h, and the argument structs that point into them.
//
//   gka_test::ProblemSpec spec;  spec.B = 2; spec.T = 65; spec.Hq = 4; spec.Hkv = 2; spec.D = 16;
//   gka_test::HostProblem prob = gka_test::random_problem(spec, /*seed=*/7);
//   gka_test::ForwardOutputs out;
//   gka::ForwardArgs args = gka_test::forward_args(prob, out, options);   // fp64 views
//
// Recipe (the golden cases use the same one):
//   q, k = raw / (||raw|| + 1e-6) per head and token, raw ~ N(0, 1); v ~ N(0, 1)
//   beta = sigmoid(N(0, 1/3)) per query head, k *= (beta + 1e-6), v *= (beta + 1e-6)
//         (with GQA, beta is drawn per kv head and repeated over the group, so k and v are shared)
//   alpha = sigmoid(N(0, 1/3))
//   g = -A softplus(a + dt_bias), A ~ U(0, 16) and dt log-uniform in [1e-3, 0.1] per head,
//       dt_bias = softplus^-1(dt), a ~ N(0, 1/3) per token and head; f: an independent draw
//   h0, s0: states of a random realistic prefix, so h0 is a genuine PSD covariance.
// Nothing is ever zero unless a test zeroes it on purpose.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gka/args.h"
#include "gka/types.h"

namespace gka_test {

struct ProblemSpec {
  int64_t B = 1, T = 16, Hq = 2, Hkv = 2, D = 16;
  std::vector<int64_t> cu_seqlens;  // non-empty: varlen, B must be 1, back() == T
  bool alpha = true;                // alpha present (otherwise alpha = 1)
  bool g = true;                    // g present (otherwise S has no decay)
  bool separate_f = false;          // f present, drawn independently of g
  bool h0 = false, s0 = false;      // initial states present
  int64_t num_states() const { return cu_seqlens.empty() ? B : static_cast<int64_t>(cu_seqlens.size()) - 1; }
};

// A spec with the given sizes and every other field at its default.
inline ProblemSpec problem_spec(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D) {
  ProblemSpec s;
  s.B = B;
  s.T = T;
  s.Hq = Hq;
  s.Hkv = Hkv;
  s.D = D;
  return s;
}

struct HostProblem {
  ProblemSpec spec;
  std::vector<double> raw_q, raw_k, raw_v;  // before the L2 norm and beta: [B,T,H,D]
  std::vector<double> beta;                 // [B,T,Hq]
  std::vector<double> q, k, v;              // as the core op takes them (normalised, beta-scaled)
  std::vector<double> alpha, g, f;          // [B,T,Hq]; empty = absent
  std::vector<double> h0, s0;               // [N,Hq,D,D]; empty = absent
};

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

// Rows [count][D] of N(0, 1) entries.
inline std::vector<double> normal_rows(std::mt19937_64& rng, int64_t count, int64_t D) {
  std::normal_distribution<double> n01(0.0, 1.0);
  std::vector<double> x(static_cast<size_t>(count * D));
  for (double& e : x) e = n01(rng);
  return x;
}

// x / (||x|| + 1e-6) for every row of width D.
inline std::vector<double> l2_normalized(std::vector<double> x, int64_t D) {
  for (size_t r = 0; r * D < x.size(); ++r) {
    double s = 0;
    for (int64_t i = 0; i < D; ++i) s += x[r * D + i] * x[r * D + i];
    const double inv = 1.0 / (std::sqrt(s) + 1e-6);
    for (int64_t i = 0; i < D; ++i) x[r * D + i] *= inv;
  }
  return x;
}

// sigmoid(N(0, 1/3)) values in (0, 1).
inline std::vector<double> random_gate01(std::mt19937_64& rng, int64_t count) {
  std::normal_distribution<double> n(0.0, std::sqrt(1.0 / 3.0));
  std::vector<double> x(static_cast<size_t>(count));
  for (double& e : x) e = sigmoid(n(rng));
  return x;
}

// Realistic log-decays g = -A softplus(a + dt_bias), [B,T,H] (spec 1.2 step 7).
inline std::vector<double> realistic_log_decay(std::mt19937_64& rng, int64_t B, int64_t T, int64_t H) {
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  std::normal_distribution<double> n(0.0, std::sqrt(1.0 / 3.0));
  std::vector<double> A(H), dt_bias(H);
  for (int64_t h = 0; h < H; ++h) {
    A[h] = 16.0 * u01(rng);
    const double dt = std::fmax(1e-4, std::exp(std::log(1e-3) + u01(rng) * (std::log(0.1) - std::log(1e-3))));
    dt_bias[h] = std::log(std::expm1(dt));  // softplus^-1
  }
  std::vector<double> g(static_cast<size_t>(B * T * H));
  for (int64_t i = 0; i < B * T; ++i)
    for (int64_t h = 0; h < H; ++h) g[i * H + h] = -A[h] * softplus(n(rng) + dt_bias[h]);
  return g;
}

// States after a random realistic prefix of `prefix` tokens, per (state, head):
// H = sum_i w_i k_i k_i^T, S = sum_i w_i k_i v_i^T with decay weights w_i in (0, 1].
inline void random_prefix_states(std::mt19937_64& rng, int64_t N, int64_t H, int64_t D, int64_t prefix,
                                 std::vector<double>* h0, std::vector<double>* s0) {
  h0->assign(static_cast<size_t>(N * H * D * D), 0.0);
  s0->assign(h0->size(), 0.0);
  for (int64_t s = 0; s < N * H; ++s) {
    const std::vector<double> beta = random_gate01(rng, prefix);
    std::vector<double> k = l2_normalized(normal_rows(rng, prefix, D), D), v = normal_rows(rng, prefix, D);
    const std::vector<double> g = realistic_log_decay(rng, 1, prefix, 1);
    double w = 1.0;
    for (int64_t i = prefix - 1; i >= 0; --i) {  // newest token first: weight exp(sum of later gates)
      const double b = beta[i] + 1e-6;
      for (int64_t a = 0; a < D; ++a)
        for (int64_t c = 0; c < D; ++c) {
          (*h0)[s * D * D + a * D + c] += w * b * b * k[i * D + a] * k[i * D + c];
          (*s0)[s * D * D + a * D + c] += w * b * b * k[i * D + a] * v[i * D + c];
        }
      w *= std::exp(g[i]);
    }
  }
}

inline HostProblem random_problem(const ProblemSpec& spec, uint64_t seed) {
  std::mt19937_64 rng(seed);
  HostProblem p;
  p.spec = spec;
  const int64_t B = spec.B, T = spec.T, Hq = spec.Hq, Hkv = spec.Hkv, D = spec.D, G = Hq / Hkv;
  p.raw_q = normal_rows(rng, B * T * Hq, D);
  p.raw_k = normal_rows(rng, B * T * Hkv, D);
  p.raw_v = normal_rows(rng, B * T * Hkv, D);
  const std::vector<double> beta_kv = random_gate01(rng, B * T * Hkv);
  p.beta.resize(static_cast<size_t>(B * T * Hq));
  for (int64_t i = 0; i < B * T; ++i)
    for (int64_t h = 0; h < Hq; ++h) p.beta[i * Hq + h] = beta_kv[i * Hkv + h / G];
  p.q = l2_normalized(p.raw_q, D);
  p.k = l2_normalized(p.raw_k, D);
  p.v = p.raw_v;
  for (int64_t i = 0; i < B * T * Hkv; ++i)
    for (int64_t d = 0; d < D; ++d) {
      p.k[i * D + d] *= beta_kv[i] + 1e-6;
      p.v[i * D + d] *= beta_kv[i] + 1e-6;
    }
  if (spec.alpha) p.alpha = random_gate01(rng, B * T * Hq);
  if (spec.g) p.g = realistic_log_decay(rng, B, T, Hq);
  if (spec.separate_f) p.f = realistic_log_decay(rng, B, T, Hq);
  std::vector<double> h0, s0;
  if (spec.h0 || spec.s0) random_prefix_states(rng, spec.num_states(), Hq, D, 2 * D, &h0, &s0);
  if (spec.h0) p.h0 = h0;
  if (spec.s0) p.s0 = s0;
  return p;
}

// ---- argument structs over a HostProblem (fp64, contiguous) ---------------------------------

inline gka::TokenTensor token_view(const std::vector<double>& x, int64_t T, int64_t H, int64_t width) {
  if (x.empty()) return gka::TokenTensor{};
  return gka::TokenTensor::contiguous(x.data(), gka::DType::kFP64, T, H, width);
}
inline gka::StateTensor state_view(const std::vector<double>& x, int64_t H, int64_t D) {
  if (x.empty()) return gka::StateTensor{};
  return gka::StateTensor::contiguous(x.data(), gka::DType::kFP64, H, D);
}

inline gka::ProblemShape shape_of(const HostProblem& p) {
  gka::ProblemShape s;
  s.batch = p.spec.B;
  s.seqlen = p.spec.T;
  s.heads_q = p.spec.Hq;
  s.heads_kv = p.spec.Hkv;
  s.head_dim = p.spec.D;
  if (!p.spec.cu_seqlens.empty()) {
    s.cu_seqlens.data = p.spec.cu_seqlens.data();
    s.cu_seqlens.type = gka::IndexType::kInt64;
    s.cu_seqlens.num_seqs = p.spec.num_states();
  }
  return s;
}

// The core-op inputs (already normalised and scaled), or with raw_qkv the raw_q, raw_k, raw_v that
// the fused transforms (l2norm_qk, fuse_beta) take instead.
inline gka::OperatorInputs inputs_of(const HostProblem& p, bool raw_qkv = false) {
  const int64_t T = p.spec.T, Hq = p.spec.Hq, Hkv = p.spec.Hkv, D = p.spec.D;
  gka::OperatorInputs in;
  in.q = token_view(raw_qkv ? p.raw_q : p.q, T, Hq, D);
  in.k = token_view(raw_qkv ? p.raw_k : p.k, T, Hkv, D);
  in.v = token_view(raw_qkv ? p.raw_v : p.v, T, Hkv, D);
  in.alpha = token_view(p.alpha, T, Hq, 1);
  in.g = token_view(p.g, T, Hq, 1);
  in.f = token_view(p.f, T, Hq, 1);
  in.beta = token_view(p.beta, T, Hq, 1);
  in.h0 = state_view(p.h0, Hq, D);
  in.s0 = state_view(p.s0, Hq, D);
  return in;
}

// fp64 outputs of a forward, sized for the problem.
struct ForwardOutputs {
  std::vector<double> o, x, nu, ht, st;
};

inline gka::ForwardArgs forward_args(const HostProblem& p, ForwardOutputs& out, const gka::SolverOptions& options) {
  const int64_t B = p.spec.B, T = p.spec.T, Hq = p.spec.Hq, D = p.spec.D, N = p.spec.num_states();
  out.o.assign(static_cast<size_t>(B * T * Hq * D), NAN);  // NaN: unwritten elements fail loudly
  out.x.assign(out.o.size(), NAN);
  out.nu.assign(static_cast<size_t>(B * T * Hq), NAN);
  out.ht.assign(static_cast<size_t>(N * Hq * D * D), NAN);
  out.st.assign(out.ht.size(), NAN);
  gka::ForwardArgs a;
  a.shape = shape_of(p);
  a.in = inputs_of(p);
  a.options = options;
  a.o = token_view(out.o, T, Hq, D);
  a.x = token_view(out.x, T, Hq, D);
  a.nu = token_view(out.nu, T, Hq, 1);
  a.ht = state_view(out.ht, Hq, D);
  a.st = state_view(out.st, Hq, D);
  return a;
}

// The incoming gradients of a backward: dL/do, and dL/dH_T, dL/dS_T (empty = absent).
struct LossGradients {
  std::vector<double> d_o, d_ht, d_st;
};

// fp64 gradients of a backward, sized for the problem (df only when f is present, dbeta only with
// fuse_beta); NaN marks what the backward did not write.
struct BackwardOutputs {
  std::vector<double> dq, dk, dv, dalpha, dg, df, dbeta, dh0, ds0;
};

inline gka::BackwardArgs backward_args(const HostProblem& p, const LossGradients& w, BackwardOutputs& out,
                                       const gka::SolverOptions& options, bool bp_lambda) {
  const int64_t B = p.spec.B, T = p.spec.T, Hq = p.spec.Hq, Hkv = p.spec.Hkv, D = p.spec.D, N = p.spec.num_states();
  const size_t BT = static_cast<size_t>(B * T);
  out = BackwardOutputs{};
  out.dq.assign(BT * Hq * D, NAN);
  out.dk.assign(BT * Hkv * D, NAN);
  out.dv.assign(out.dk.size(), NAN);
  out.dalpha.assign(BT * Hq, NAN);
  out.dg.assign(out.dalpha.size(), NAN);
  if (!p.f.empty()) out.df.assign(out.dalpha.size(), NAN);
  if (options.fuse_beta) out.dbeta.assign(out.dalpha.size(), NAN);
  out.dh0.assign(static_cast<size_t>(N * Hq * D * D), NAN);
  out.ds0.assign(out.dh0.size(), NAN);
  gka::BackwardArgs a;
  a.shape = shape_of(p);
  a.in = inputs_of(p);
  a.options = options;
  a.bp_lambda = bp_lambda;
  a.d_o = token_view(w.d_o, T, Hq, D);
  a.d_ht = state_view(w.d_ht, Hq, D);
  a.d_st = state_view(w.d_st, Hq, D);
  a.dq = token_view(out.dq, T, Hq, D);
  a.dk = token_view(out.dk, T, Hkv, D);
  a.dv = token_view(out.dv, T, Hkv, D);
  a.dalpha = token_view(out.dalpha, T, Hq, 1);
  a.dg = token_view(out.dg, T, Hq, 1);
  a.df = token_view(out.df, T, Hq, 1);
  a.dbeta = token_view(out.dbeta, T, Hq, 1);
  a.dh0 = state_view(out.dh0, Hq, D);
  a.ds0 = state_view(out.ds0, Hq, D);
  return a;
}

}  // namespace gka_test
