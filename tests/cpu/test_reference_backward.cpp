// Float64 reference backward (spec 4): finite-difference checks of every gradient, the chunked
// schedule of spec 4.6 against the global formulas, extreme gates, Lemma 2, and the Args-level
// driver (GQA, fusions).
//
// Tolerance of the FD checks: central differences with step h = 1e-5 in float64 have truncation
// error O(h^2 |f'''|) ~ 1e-10 and rounding error O(eps |L| / h) ~ 1e-11 relative to the gradient,
// so a correct gradient agrees to ~1e-8 relative (we measure ~1e-9 or better); a wrong term gives
// O(1e-2..1). The error is max_i |fd_i - g_i| / max_i |g_i| per gradient tensor.
#include "common/catch.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gka/reference/head_backward.h"
#include "gka/reference/head_backward_chunked.h"
#include "gka/reference/head_forward.h"
#include "gka/reference/operator.h"
#include "gka/reference/operator_backward.h"
#include "common/compare.h"
#include "common/random_inputs.h"

namespace {

using gka::reference::HeadGradInputs;
using gka::reference::HeadGrads;
using gka::reference::HeadInputs;
using gka::reference::SolveMethod;
using gka::reference::SolverParams;
using Vec = std::vector<double>;

constexpr double kFdStep = 1e-5;
constexpr double kFdTol = 1e-7;        // see the header comment; measured errors are ~1e-9
constexpr double kScheduleTol = 1e-12;  // chunked vs global: same sums in a different order

struct CaseOptions {
  int T = 21, D = 6;
  bool sep_f = true, h0 = true, s0 = true, alpha = true;
  bool d_o = true, d_ht = true, d_st = true;
  double gate_scale = 0.3;  // g, f ~ -U(0.01, gate_scale)
  unsigned seed = 1;
};

// One head with realistic inputs (unit q, beta-scaled unit k, PSD h0) and the loss weights.
struct HeadCase {
  CaseOptions opt;
  Vec q, k, v, alpha, g, f, h0, s0, d_o, d_ht, d_st;

  explicit HeadCase(const CaseOptions& o) : opt(o) {
    std::mt19937_64 rng(o.seed);
    std::normal_distribution<double> n01(0.0, 1.0);
    std::uniform_real_distribution<double> u01(0.0, 1.0);
    const int T = o.T, D = o.D;
    auto randn = [&](size_t n) { Vec x(n); for (double& e : x) e = n01(rng); return x; };
    auto unit_rows = [&](Vec x, bool beta) {
      for (int t = 0; t < T; ++t) {
        double s = 0;
        for (int i = 0; i < D; ++i) s += x[t * D + i] * x[t * D + i];
        const double scale = (beta ? 0.3 + 0.6 * u01(rng) : 1.0) / std::sqrt(s);
        for (int i = 0; i < D; ++i) x[t * D + i] *= scale;
      }
      return x;
    };
    q = unit_rows(randn(T * D), false);
    k = unit_rows(randn(T * D), true);
    v = randn(T * D);
    if (o.alpha) { alpha.resize(T); for (double& a : alpha) a = 0.2 + 0.7 * u01(rng); }
    g.resize(T);
    for (double& e : g) e = -(0.01 + (o.gate_scale - 0.01) * u01(rng));
    if (o.sep_f) { f.resize(T); for (double& e : f) e = -(0.01 + (o.gate_scale - 0.01) * u01(rng)); }
    if (o.h0) {  // PSD: a few decayed outer products
      h0.assign(D * D, 0.0);
      for (int r = 0; r < 3; ++r) {
        Vec w = randn(D);
        for (int i = 0; i < D; ++i)
          for (int j = 0; j < D; ++j) h0[i * D + j] += 0.3 * w[i] * w[j];
      }
    }
    if (o.s0) s0 = randn(D * D);
    d_o = o.d_o ? randn(T * D) : Vec(T * D, 0.0);
    if (o.d_ht) d_ht = randn(D * D);
    if (o.d_st) d_st = randn(D * D);
  }

  HeadInputs<double> inputs() const {
    HeadInputs<double> in;
    in.T = opt.T;
    in.D = opt.D;
    in.q = q.data();
    in.k = k.data();
    in.v = v.data();
    in.alpha = alpha.empty() ? nullptr : alpha.data();
    in.g = g.data();
    in.f = f.empty() ? nullptr : f.data();
    in.h0 = h0.empty() ? nullptr : h0.data();
    in.s0 = s0.empty() ? nullptr : s0.data();
    return in;
  }
  HeadGradInputs<double> grad_inputs() const {
    HeadGradInputs<double> gi;
    gi.d_o = d_o.data();
    gi.d_ht = d_ht.empty() ? nullptr : d_ht.data();
    gi.d_st = d_st.empty() ? nullptr : d_st.data();
    return gi;
  }

  // L = <o, dO> + <H_T, dH_T> + <S_T, dS_T>; frozen_nu freezes lambda (the bp_lambda = false function).
  double loss(const SolverParams& p, const double* frozen_nu = nullptr) const {
    const auto out = gka::reference::forward_sequential(inputs(), p, frozen_nu);
    double L = 0;
    for (size_t i = 0; i < out.o.size(); ++i) L += out.o[i] * d_o[i];
    for (size_t i = 0; i < d_ht.size(); ++i) L += out.HT[i] * d_ht[i];
    for (size_t i = 0; i < d_st.size(); ++i) L += out.ST[i] * d_st[i];
    return L;
  }
};

using gka_test::max_abs;

// max_i |a_i - b_i| / max_i |b_i| (absolute when b is zero); NaN/Inf give +Inf.
double max_rel_diff(const Vec& a, const Vec& b) {
  if (a.size() != b.size()) return INFINITY;
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    d = std::fmax(d, std::fabs(a[i] - b[i]));
  }
  const double ref = max_abs(b);
  return ref > 0 ? d / ref : d;
}

// Central FD of the loss w.r.t. every element of `param` (which `loss` reads).
Vec fd_gradient(Vec& param, const std::function<double()>& loss) {
  Vec fd(param.size());
  for (size_t i = 0; i < param.size(); ++i) {
    const double keep = param[i];
    param[i] = keep + kFdStep;
    const double lp = loss();
    param[i] = keep - kFdStep;
    const double lm = loss();
    param[i] = keep;
    fd[i] = (lp - lm) / (2 * kFdStep);
  }
  return fd;
}

// FD of a symmetric parameter: perturb (i,j) and (j,i) together, so the directional derivative is
// G_ij + G_ji = 2 sym(G)_ij off the diagonal; returns sym(G). H0 sits inside the ridge solve, where
// the loss is strongly curved (third derivatives ~ 1/lambda^3), so the central difference is
// Richardson-extrapolated: (4 D(h/2) - D(h)) / 3 has truncation error O(h^4).
Vec fd_symmetric(int D, Vec& param, const std::function<double()>& loss, double step = kFdStep) {
  Vec fd(D * D);
  for (int i = 0; i < D; ++i)
    for (int j = i; j < D; ++j) {
      const double a = param[i * D + j], b = param[j * D + i];
      auto set = [&](double h) { param[i * D + j] = a + h; if (i != j) param[j * D + i] = b + h; };
      auto central = [&](double h) {
        set(h);
        const double lp = loss();
        set(-h);
        const double lm = loss();
        return (lp - lm) / (2 * h);
      };
      const double d = (4 * central(step / 2) - central(step)) / 3;
      param[i * D + j] = a;
      param[j * D + i] = b;
      fd[i * D + j] = fd[j * D + i] = d / (i == j ? 1.0 : 2.0);
    }
  return fd;
}

// Checks every gradient of hc against FD of the true (bp_lambda) or frozen-lambda function and
// returns the error per gradient name. Gradients that are identically zero by construction (no
// incoming gradient reaches them) are compared too: FD must then be ~0 as well.
std::map<std::string, double> fd_check_all(HeadCase& hc, const SolverParams& p, bool bp_lambda) {
  const HeadGrads<double> g = gka::reference::backward_sequential(hc.inputs(), hc.grad_inputs(), p, bp_lambda);
  const auto base = gka::reference::forward_sequential(hc.inputs(), p);
  const Vec frozen = base.nu;
  auto loss = [&]() { return hc.loss(p, bp_lambda ? nullptr : frozen.data()); };
  std::map<std::string, double> err;
  err["q"] = max_rel_diff(g.dq, fd_gradient(hc.q, loss));
  err["k"] = max_rel_diff(g.dk, fd_gradient(hc.k, loss));
  err["v"] = max_rel_diff(g.dv, fd_gradient(hc.v, loss));
  if (!hc.alpha.empty()) err["alpha"] = max_rel_diff(g.dalpha, fd_gradient(hc.alpha, loss));
  err["g"] = max_rel_diff(g.dg, fd_gradient(hc.g, loss));
  if (!hc.f.empty()) err["f"] = max_rel_diff(g.df, fd_gradient(hc.f, loss));
  if (!hc.h0.empty()) err["H0"] = max_rel_diff(g.dh0, fd_symmetric(hc.opt.D, hc.h0, loss));
  if (!hc.s0.empty()) err["S0"] = max_rel_diff(g.ds0, fd_gradient(hc.s0, loss));
  return err;
}

void report(const char* label, const std::map<std::string, double>& err) {
  std::string line;
  for (const auto& e : err) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " %s=%.2e", e.first.c_str(), e.second);
    line += buf;
  }
  std::printf("[backward FD] %-34s%s\n", label, line.c_str());
  INFO(label << line);
  for (const auto& e : err) {
    INFO(e.first);
    CHECK(e.second < kFdTol);
  }
}

SolverParams exact_params(int num_iter = 30) {
  SolverParams p;
  p.num_iter = num_iter;
  p.ratio = 0.02;
  p.scale = 0.4;
  p.method = SolveMethod::kExact;
  return p;
}

}  // namespace

TEST_CASE("backward FD: every gradient, bp_lambda on and off, separate f", "[cpu][reference][backward]") {
  for (bool bp : {true, false}) {
    HeadCase hc(CaseOptions{});
    report(bp ? "all inputs, bp_lambda=on" : "all inputs, bp_lambda=off (frozen)", fd_check_all(hc, exact_params(), bp));
  }
}

TEST_CASE("backward FD: f absent gives the total gate gradient in dg", "[cpu][reference][backward]") {
  CaseOptions o;
  o.sep_f = false;
  o.seed = 2;
  for (bool bp : {true, false}) {
    HeadCase hc(o);
    report(bp ? "f = g, bp_lambda=on" : "f = g, bp_lambda=off", fd_check_all(hc, exact_params(), bp));
  }
}

TEST_CASE("backward FD: gradients through the final states only", "[cpu][reference][backward]") {
  for (bool bp : {true, false}) {
    CaseOptions o;
    o.d_o = false;
    o.d_st = false;
    o.seed = 3;
    HeadCase via_h(o);  // L = <H_T, dH_T>: reaches k, f, H0
    report(bp ? "via H_T only, bp_lambda=on" : "via H_T only, bp_lambda=off", fd_check_all(via_h, exact_params(), bp));
    o.d_ht = false;
    o.d_st = true;
    HeadCase via_s(o);  // L = <S_T, dS_T>: reaches k, v, g, S0
    report(bp ? "via S_T only, bp_lambda=on" : "via S_T only, bp_lambda=off", fd_check_all(via_s, exact_params(), bp));
  }
}

TEST_CASE("backward FD: no initial states, no alpha, num_iter = 0", "[cpu][reference][backward]") {
  CaseOptions o;
  o.h0 = o.s0 = o.alpha = false;
  o.seed = 4;
  HeadCase hc(o);
  report("no h0/s0/alpha, bp_lambda=on", fd_check_all(hc, exact_params(), true));
  // num_iter = 0: x = q, so the solve contributes nothing and dalpha = 0 (spec 12.13).
  CaseOptions o0;
  o0.seed = 5;
  HeadCase hc0(o0);
  report("num_iter=0", fd_check_all(hc0, exact_params(0), true));
  const auto g = gka::reference::backward_sequential(hc0.inputs(), hc0.grad_inputs(), exact_params(0), true);
  CHECK(max_abs(g.dalpha) == 0.0);
  CHECK(max_abs(g.z) == 0.0);
}

TEST_CASE("backward: Lemma 2, the Chebyshev q-gradient is the exact derivative of the r-step solver",
          "[cpu][reference][backward]") {
  // Chebyshev solve: dq, dv, dalpha and dS0 do not involve the implicit-function approximation,
  // so they must match FD of the Chebyshev forward itself.
  for (int r : {3, 30}) {
    CaseOptions o;
    o.seed = 6;
    HeadCase hc(o);
    SolverParams p = exact_params(r);
    p.method = SolveMethod::kChebyshev;
    const auto g = gka::reference::backward_sequential(hc.inputs(), hc.grad_inputs(), p, true);
    auto loss = [&]() { return hc.loss(p); };
    std::map<std::string, double> err;
    err["q"] = max_rel_diff(g.dq, fd_gradient(hc.q, loss));
    err["v"] = max_rel_diff(g.dv, fd_gradient(hc.v, loss));
    err["alpha"] = max_rel_diff(g.dalpha, fd_gradient(hc.alpha, loss));
    err["S0"] = max_rel_diff(g.ds0, fd_gradient(hc.s0, loss));
    report(r == 3 ? "Lemma 2 (Chebyshev r=3)" : "Lemma 2 (Chebyshev r=30)", err);
  }
}

namespace {

std::map<std::string, double> schedule_diff(const HeadGrads<double>& c, const HeadGrads<double>& s) {
  return {{"dq", max_rel_diff(c.dq, s.dq)},         {"dk", max_rel_diff(c.dk, s.dk)},
          {"dk_h", max_rel_diff(c.dk_h, s.dk_h)},   {"dv", max_rel_diff(c.dv, s.dv)},
          {"dalpha", max_rel_diff(c.dalpha, s.dalpha)}, {"dg", max_rel_diff(c.dg, s.dg)},
          {"df", max_rel_diff(c.df, s.df)},         {"dh0", max_rel_diff(c.dh0, s.dh0)},
          {"ds0", max_rel_diff(c.ds0, s.ds0)},      {"z", max_rel_diff(c.z, s.z)}};
}

void check_schedule(const HeadCase& hc, const SolverParams& p, bool bp, int C, double tol = kScheduleTol) {
  const auto s = gka::reference::backward_sequential(hc.inputs(), hc.grad_inputs(), p, bp);
  const auto c = gka::reference::backward_chunked(hc.inputs(), hc.grad_inputs(), p, bp, C);
  for (const auto& e : schedule_diff(c, s)) {
    INFO("T=" << hc.opt.T << " C=" << C << " bp_lambda=" << bp << " " << e.first << " diff " << e.second);
    CHECK(e.second < tol);
  }
}

}  // namespace

TEST_CASE("backward: chunked schedule (spec 4.6) equals the global formulas", "[cpu][reference][backward]") {
  struct Shape { int T, C; };
  for (Shape sh : {Shape{21, 8}, Shape{1, 8}, Shape{5, 8}, Shape{16, 8}, Shape{21, 4}, Shape{21, 1}, Shape{40, 16}}) {
    for (bool bp : {true, false}) {
      for (SolveMethod m : {SolveMethod::kChebyshev, SolveMethod::kExact}) {
        CaseOptions o;
        o.T = sh.T;
        o.seed = 10 + sh.T + sh.C;
        HeadCase hc(o);
        SolverParams p = exact_params();
        p.method = m;
        check_schedule(hc, p, bp, sh.C);
      }
    }
  }
  // f = g, no states, no incoming state gradients
  CaseOptions o;
  o.sep_f = o.h0 = o.s0 = o.d_ht = o.d_st = false;
  HeadCase hc(o);
  check_schedule(hc, exact_params(), true, 8);
  check_schedule(hc, exact_params(5), false, 8);
}

TEST_CASE("backward: extreme gates give finite gradients", "[cpu][reference][backward]") {
  for (double gate : {0.0, -1e4}) {
    CaseOptions o;
    o.seed = 20;
    HeadCase hc(o);
    for (double& e : hc.g) e = gate;
    for (double& e : hc.f) e = gate;
    SolverParams p = exact_params();
    p.method = SolveMethod::kChebyshev;
    for (bool bp : {true, false}) {
      const auto s = gka::reference::backward_sequential(hc.inputs(), hc.grad_inputs(), p, bp);
      for (const Vec* v : {&s.dq, &s.dk, &s.dv, &s.dalpha, &s.dg, &s.df, &s.dh0, &s.ds0}) {
        double sum = 0;
        for (double x : *v) sum += x;
        CHECK(std::isfinite(sum));
      }
      if (gate == -1e4) {  // e^{f} underflows to 0: the local form gives exact zeros (spec 12.12)
        CHECK(max_abs(s.dg) == 0.0);
        CHECK(max_abs(s.df) == 0.0);
        CHECK(max_abs(s.dh0) == 0.0);
        CHECK(max_abs(s.ds0) == 0.0);
      }
      const auto c = gka::reference::backward_chunked(hc.inputs(), hc.grad_inputs(), p, bp, 8);
      for (const auto& e : schedule_diff(c, s)) {
        INFO("gate=" << gate << " bp=" << bp << " " << e.first << " diff " << e.second);
        // with -1e4 the chunked gate gradients are sums of terms that cancel exactly in exact
        // arithmetic; compare them against the scale of dk instead.
        const bool gate_grad = e.first == "dg" || e.first == "df";
        const double tol = gate_grad && gate != 0.0 ? 1e-12 * (max_abs(s.dk) + 1) : kScheduleTol;
        CHECK(e.second < tol);
      }
      if (gate == 0.0) {  // no decay: also check against FD (exact solve)
        HeadCase h2 = hc;
        report(bp ? "g = f = 0, bp_lambda=on" : "g = f = 0, bp_lambda=off", fd_check_all(h2, exact_params(), bp));
      }
    }
  }
}

TEST_CASE("backward: nu = 0 guard (all-zero keys so far)", "[cpu][reference][backward]") {
  CaseOptions o;
  o.h0 = false;
  o.seed = 30;
  HeadCase hc(o);
  for (int t = 0; t < 3; ++t)
    for (int i = 0; i < o.D; ++i) hc.k[t * o.D + i] = 0.0;
  SolverParams p = exact_params();
  p.method = SolveMethod::kChebyshev;
  for (bool bp : {true, false}) {
    const auto s = gka::reference::backward_sequential(hc.inputs(), hc.grad_inputs(), p, bp);
    for (int t = 0; t < 3; ++t)
      for (int i = 0; i < o.D; ++i) CHECK(s.z[t * o.D + i] == 0.0);
    double sum = 0;
    for (const Vec* v : {&s.dq, &s.dk, &s.dv, &s.dalpha, &s.dg, &s.df, &s.ds0}) for (double x : *v) sum += x;
    CHECK(std::isfinite(sum));
    check_schedule(hc, p, bp, 8);
  }
}

TEST_CASE("backward: bp_lambda changes the covariance gradients", "[cpu][reference][backward]") {
  // Guards the FD checks above against comparing two identical functions.
  HeadCase hc(CaseOptions{});
  const auto on = gka::reference::backward_sequential(hc.inputs(), hc.grad_inputs(), exact_params(), true);
  const auto off = gka::reference::backward_sequential(hc.inputs(), hc.grad_inputs(), exact_params(), false);
  std::printf("[backward] |on - off| / |on|: dk %.2e, df %.2e, dh0 %.2e\n", max_rel_diff(off.dk, on.dk),
              max_rel_diff(off.df, on.df), max_rel_diff(off.dh0, on.dh0));
  CHECK(max_rel_diff(off.dk, on.dk) > 1e-4);
  CHECK(max_rel_diff(off.df, on.df) > 1e-4);
  CHECK(max_rel_diff(off.dh0, on.dh0) > 1e-4);
  CHECK(max_rel_diff(off.dq, on.dq) == 0.0);  // dq, dv, dalpha, dS0 do not depend on it
  CHECK(max_rel_diff(off.ds0, on.ds0) == 0.0);
}

// ---- the Args-level driver: GQA, varlen, fusions -------------------------------------------------

namespace {

using gka_test::HostProblem;

// Loss weights and gradient buffers for a HostProblem, and the Args that point into them.
struct OperatorCase {
  HostProblem prob;
  gka::SolverOptions options;
  gka_test::LossGradients w;
  gka_test::BackwardOutputs grads;
  bool fused = false;  // feed raw_q, raw_k, raw_v, beta with l2norm_qk and fuse_beta

  OperatorCase(const gka_test::ProblemSpec& spec, bool fused_inputs, uint64_t seed)
      : prob(gka_test::random_problem(spec, seed)), fused(fused_inputs) {
    options.num_iter = 30;
    options.chunk_size = 8;
    options.l2norm_qk = options.fuse_beta = fused;
    std::mt19937_64 rng(seed + 1000);
    const auto& s = prob.spec;
    const int64_t N = s.num_states();
    w.d_o = gka_test::normal_rows(rng, s.B * s.T * s.Hq, s.D);
    w.d_ht = gka_test::normal_rows(rng, N * s.Hq, s.D * s.D);
    w.d_st = gka_test::normal_rows(rng, N * s.Hq, s.D * s.D);
  }
  Vec& q() { return fused ? prob.raw_q : prob.q; }
  Vec& k() { return fused ? prob.raw_k : prob.k; }
  Vec& v() { return fused ? prob.raw_v : prob.v; }

  double loss(const gka::reference::ReferenceOptions& ref) const {
    gka_test::ForwardOutputs out;
    gka::ForwardArgs a = gka_test::forward_args(prob, out, options);
    a.in = gka_test::inputs_of(prob, /*raw_qkv=*/fused);
    const gka::Result r = gka::reference::forward<double>(a, ref);
    if (!r.ok()) return NAN;
    double L = 0;
    for (size_t i = 0; i < out.o.size(); ++i) L += out.o[i] * w.d_o[i];
    for (size_t i = 0; i < out.ht.size(); ++i) L += out.ht[i] * w.d_ht[i] + out.st[i] * w.d_st[i];
    return L;
  }

  template <class Real = double>
  gka::Result backward(const gka::reference::ReferenceOptions& ref, bool bp_lambda) {
    gka::BackwardArgs a = gka_test::backward_args(prob, w, grads, options, bp_lambda);
    a.in = gka_test::inputs_of(prob, /*raw_qkv=*/fused);
    return gka::reference::backward<Real>(a, ref);
  }
};

Vec fd_states_symmetric(int64_t count, int64_t D, Vec& param, const std::function<double()>& loss, double step) {
  Vec fd(param.size());
  for (int64_t s = 0; s < count; ++s) {
    Vec block(param.begin() + s * D * D, param.begin() + (s + 1) * D * D);
    auto block_loss = [&]() {
      std::copy(block.begin(), block.end(), param.begin() + s * D * D);
      return loss();
    };
    const Vec g = fd_symmetric(static_cast<int>(D), block, block_loss, step);
    std::copy(g.begin(), g.end(), fd.begin() + s * D * D);
    block_loss();  // restore
  }
  return fd;
}

}  // namespace

TEST_CASE("backward driver FD: GQA (dk, dv summed over groups), every input", "[cpu][reference][backward]") {
  gka_test::ProblemSpec spec = gka_test::problem_spec(2, 13, 4, 2, 6);  // B, T, Hq, Hkv, D
  spec.separate_f = spec.h0 = spec.s0 = true;
  OperatorCase oc(spec, /*fused=*/false, 41);
  gka::reference::ReferenceOptions ref;
  ref.method = SolveMethod::kExact;
  const gka::Result r = oc.backward(ref, true);
  REQUIRE(r.ok());
  auto loss = [&]() { return oc.loss(ref); };
  std::map<std::string, double> err;
  err["q"] = max_rel_diff(oc.grads.dq, fd_gradient(oc.q(), loss));
  err["k"] = max_rel_diff(oc.grads.dk, fd_gradient(oc.k(), loss));
  err["v"] = max_rel_diff(oc.grads.dv, fd_gradient(oc.v(), loss));
  err["alpha"] = max_rel_diff(oc.grads.dalpha, fd_gradient(oc.prob.alpha, loss));
  err["g"] = max_rel_diff(oc.grads.dg, fd_gradient(oc.prob.g, loss));
  err["f"] = max_rel_diff(oc.grads.df, fd_gradient(oc.prob.f, loss));
  err["H0"] = max_rel_diff(oc.grads.dh0, fd_states_symmetric(2 * 4, 6, oc.prob.h0, loss, 1e-5));
  err["S0"] = max_rel_diff(oc.grads.ds0, fd_gradient(oc.prob.s0, loss));
  report("driver: GQA 4/2, B=2, bp_lambda=on", err);

  // The chunked schedule through the driver gives the same gradients.
  const Vec dk_seq = oc.grads.dk, dg_seq = oc.grads.dg, dh0_seq = oc.grads.dh0;
  ref.schedule = gka::reference::Schedule::kChunked;
  REQUIRE(oc.backward(ref, true).ok());
  CHECK(max_rel_diff(oc.grads.dk, dk_seq) < kScheduleTol);
  CHECK(max_rel_diff(oc.grads.dg, dg_seq) < kScheduleTol);
  CHECK(max_rel_diff(oc.grads.dh0, dh0_seq) < kScheduleTol);
}

TEST_CASE("backward driver FD: fused L2 norm and beta, varlen", "[cpu][reference][backward]") {
  gka_test::ProblemSpec spec = gka_test::problem_spec(1, 13, 4, 2, 6);  // B, T, Hq, Hkv, D
  spec.cu_seqlens = {0, 5, 13};
  spec.h0 = spec.s0 = true;
  OperatorCase oc(spec, /*fused=*/true, 42);
  gka::reference::ReferenceOptions ref;
  ref.method = SolveMethod::kExact;
  REQUIRE(oc.backward(ref, true).ok());
  auto loss = [&]() { return oc.loss(ref); };
  std::map<std::string, double> err;
  err["raw q"] = max_rel_diff(oc.grads.dq, fd_gradient(oc.q(), loss));
  err["raw k"] = max_rel_diff(oc.grads.dk, fd_gradient(oc.k(), loss));
  err["raw v"] = max_rel_diff(oc.grads.dv, fd_gradient(oc.v(), loss));
  err["beta"] = max_rel_diff(oc.grads.dbeta, fd_gradient(oc.prob.beta, loss));
  err["g (f = g)"] = max_rel_diff(oc.grads.dg, fd_gradient(oc.prob.g, loss));
  report("driver: fused l2norm+beta, varlen", err);
}

TEST_CASE("backward: the driver also runs in float", "[cpu][reference][backward]") {
  // Real = float computes the same gradients to float accuracy: kappa(A) <= (1 + a)/a = 51 amplifies
  // float's unit roundoff 6e-8 to ~3e-6, so 1e-5 (observed: <= 1.2e-6) still catches a wrong path.
  constexpr double kFloatTol = 1e-5;
  gka_test::ProblemSpec spec = gka_test::problem_spec(1, 21, 2, 1, 8);  // B, T, Hq, Hkv, D
  spec.separate_f = spec.h0 = spec.s0 = true;
  OperatorCase oc(spec, /*fused=*/true, 43);
  for (auto sched : {gka::reference::Schedule::kSequential, gka::reference::Schedule::kChunked}) {
    gka::reference::ReferenceOptions ref;
    ref.schedule = sched;
    REQUIRE(oc.backward<double>(ref, true).ok());
    const OperatorCase want = oc;
    REQUIRE(oc.backward<float>(ref, true).ok());
    CHECK(gka_test::rel_error(oc.grads.dq, want.grads.dq) < kFloatTol);
    CHECK(gka_test::rel_error(oc.grads.dk, want.grads.dk) < kFloatTol);
    CHECK(gka_test::rel_error(oc.grads.dv, want.grads.dv) < kFloatTol);
    CHECK(gka_test::rel_error(oc.grads.dbeta, want.grads.dbeta) < kFloatTol);
    CHECK(gka_test::rel_error(oc.grads.df, want.grads.df) < kFloatTol);
    CHECK(gka_test::rel_error(oc.grads.dh0, want.grads.dh0) < kFloatTol);
  }
}
