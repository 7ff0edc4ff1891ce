// The float64 reference forward and decode (gka/reference/operator.h) against itself: the chunked
// program against the token-by-token one, the Chebyshev solve against the exact solve, and every
// piece of Args plumbing (varlen, GQA, fusions, strides, dtypes, decode pool) against a plainer
// equivalent computation. Set GKA_TEST_VERBOSE=1 to print the errors measured.
#include "common/catch.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/compare.h"
#include "common/random_inputs.h"
#include "gka/numeric/host_convert.h"
#include "gka/reference/reference.h"

namespace {

using gka_test::ForwardOutputs;
using gka_test::HostProblem;
using gka_test::ProblemSpec;
namespace ref = gka::reference;

void report(const std::string& what, double err) {
  if (std::getenv("GKA_TEST_VERBOSE")) std::printf("  %-58s %.3e\n", what.c_str(), err);
}

gka::SolverOptions solver(int num_iter = 30, double ratio = 0.02, int chunk = 64) {
  gka::SolverOptions o;
  o.num_iter = num_iter;
  o.ridge_ratio = ratio;
  o.chunk_size = chunk;
  return o;
}

ref::ReferenceOptions chunked_schedule() {
  ref::ReferenceOptions r;
  r.schedule = ref::Schedule::kChunked;
  return r;
}

ForwardOutputs run_forward(const HostProblem& p, const gka::SolverOptions& o, const ref::ReferenceOptions& r = {}) {
  ForwardOutputs out;
  const gka::ForwardArgs args = gka_test::forward_args(p, out, o);
  const gka::Result res = ref::forward<double>(args, r);
  INFO(res.what());
  REQUIRE(res.ok());
  return out;
}

// The largest relative error over the five outputs.
double max_output_error(const ForwardOutputs& a, const ForwardOutputs& b) {
  using gka_test::rel_error;
  double e = rel_error(a.o, b.o);
  e = std::fmax(e, rel_error(a.x, b.x));
  e = std::fmax(e, rel_error(a.nu, b.nu));
  e = std::fmax(e, rel_error(a.ht, b.ht));
  return std::fmax(e, rel_error(a.st, b.st));
}

bool outputs_finite(const ForwardOutputs& a) {
  using gka_test::all_finite;
  return all_finite(a.o) && all_finite(a.x) && all_finite(a.nu) && all_finite(a.ht) && all_finite(a.st);
}

// Tokens [t0, t0 + len) of every batch row of a non-varlen problem, without initial states.
HostProblem slice_tokens(const HostProblem& p, int64_t t0, int64_t len) {
  HostProblem s = p;
  s.spec.T = len;
  s.spec.h0 = s.spec.s0 = false;
  s.h0.clear();
  s.s0.clear();
  const int64_t B = p.spec.B, T = p.spec.T;
  auto cut = [&](const std::vector<double>& x) {
    if (x.empty()) return x;
    const int64_t per_token = static_cast<int64_t>(x.size()) / (B * T);
    std::vector<double> y;
    for (int64_t b = 0; b < B; ++b)
      y.insert(y.end(), x.begin() + (b * T + t0) * per_token, x.begin() + (b * T + t0 + len) * per_token);
    return y;
  };
  s.raw_q = cut(p.raw_q);
  s.raw_k = cut(p.raw_k);
  s.raw_v = cut(p.raw_v);
  s.beta = cut(p.beta);
  s.q = cut(p.q);
  s.k = cut(p.k);
  s.v = cut(p.v);
  s.alpha = cut(p.alpha);
  s.g = cut(p.g);
  s.f = cut(p.f);
  return s;
}

// Chebyshev polynomial of the first kind, T_n(x) for x >= 1.
double chebyshev_t(int n, double x) { return std::cosh(n * std::acosh(x)); }

}  // namespace

TEST_CASE("reference: chunked forward equals the sequential forward", "[cpu][reference]") {
  struct Shape {
    int64_t T, D;
    int chunk;
  };
  const Shape shapes[] = {{1, 16, 16}, {7, 16, 16}, {64, 16, 16}, {100, 16, 16}, {1, 16, 64},
                          {7, 16, 64}, {64, 32, 64}, {150, 16, 64}, {37, 8, 4}};
  double worst = 0;
  for (const Shape& s : shapes) {
    ProblemSpec spec = gka_test::problem_spec(2, s.T, 2, 2, s.D);  // B, T, Hq, Hkv, D
    spec.separate_f = s.T % 2 == 0;
    spec.h0 = spec.s0 = true;
    const HostProblem p = gka_test::random_problem(spec, 100 + s.T + s.chunk);
    const ForwardOutputs seq = run_forward(p, solver(30, 0.02, s.chunk));
    const ForwardOutputs chk = run_forward(p, solver(30, 0.02, s.chunk), chunked_schedule());
    const double err = max_output_error(chk, seq);
    INFO("T = " << s.T << ", D = " << s.D << ", C = " << s.chunk);
    CHECK(err < 1e-12);
    worst = std::fmax(worst, err);
  }
  report("chunked vs sequential (o, x, nu, H_T, S_T)", worst);
}

TEST_CASE("reference: Chebyshev error is within the A-norm bound 1/T_{r+1}(1/rho)", "[cpu][reference]") {
  struct Setting {
    int r;
    double ratio;
  };
  for (const Setting st : {Setting{30, 0.02}, Setting{5, 0.02}, Setting{5, 0.1}}) {
    ProblemSpec spec = gka_test::problem_spec(1, 80, 2, 2, 16);  // B, T, Hq, Hkv, D
    spec.h0 = spec.s0 = true;
    const HostProblem p = gka_test::random_problem(spec, 7 + st.r);
    ref::ReferenceOptions exact;
    exact.method = ref::SolveMethod::kExact;
    const ForwardOutputs cheb = run_forward(p, solver(st.r, st.ratio));
    const ForwardOutputs best = run_forward(p, solver(st.r, st.ratio), exact);
    const double rho = 1.0 / (1.0 + 2.0 * st.ratio);
    const double bound = 1.0 / chebyshev_t(st.r + 1, 1.0 / rho);

    // Rebuild H_t per head to measure ||x - x*||_A / ||x*||_A with A = H_t + a nu_t I.
    const int64_t T = spec.T, H = spec.Hq, D = spec.D;
    double worst = 0;
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> Ht(p.h0.begin() + h * D * D, p.h0.begin() + (h + 1) * D * D);
      for (int64_t t = 0; t < T; ++t) {
        const double decay = std::exp(p.g[t * H + h]);
        const double* k = &p.k[(t * H + h) * D];
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = 0; j < D; ++j) Ht[i * D + j] = decay * Ht[i * D + j] + k[i] * k[j];
        const double lambda = st.ratio * cheb.nu[t * H + h];
        const double* x = &cheb.x[(t * H + h) * D];
        const double* xs = &best.x[(t * H + h) * D];
        auto a_norm_sq = [&](auto&& vec) {
          double s = 0;
          for (int64_t i = 0; i < D; ++i) {
            double Av = lambda * vec(i);
            for (int64_t j = 0; j < D; ++j) Av += Ht[i * D + j] * vec(j);
            s += vec(i) * Av;
          }
          return s;
        };
        const double err = std::sqrt(a_norm_sq([&](int64_t i) { return x[i] - xs[i]; }) /
                                     a_norm_sq([&](int64_t i) { return xs[i]; }));
        worst = std::fmax(worst, err);
      }
    }
    INFO("r = " << st.r << ", a = " << st.ratio << ", bound " << bound << ", measured " << worst);
    CHECK(worst <= bound * (1 + 1e-9));
    CHECK(worst > 1e-3 * bound);  // the bound is tight: the measured error sits near it
    report("Chebyshev A-norm error r=" + std::to_string(st.r) + " a=" + std::to_string(st.ratio) +
               " (bound " + std::to_string(bound) + ")",
           worst);
  }
}

TEST_CASE("reference: varlen equals separate runs per sequence", "[cpu][reference]") {
  const std::vector<int64_t> cu = {0, 5, 5, 69, 100};  // includes an empty sequence
  ProblemSpec spec = gka_test::problem_spec(1, cu.back(), 4, 2, 16);  // B, T, Hq, Hkv, D
  spec.cu_seqlens = cu;
  spec.separate_f = true;
  spec.h0 = spec.s0 = true;
  HostProblem packed = gka_test::random_problem(spec, 11);
  for (bool int32 : {false, true}) {
    for (bool chunked : {false, true}) {
      ForwardOutputs out;
      gka::ForwardArgs args = gka_test::forward_args(packed, out, solver(30, 0.02, 16));
      std::vector<int32_t> cu32(cu.begin(), cu.end());
      if (int32) {
        args.shape.cu_seqlens.data = cu32.data();
        args.shape.cu_seqlens.type = gka::IndexType::kInt32;
      }
      REQUIRE(ref::forward<double>(args, chunked ? chunked_schedule() : ref::ReferenceOptions{}).ok());
      double worst = 0;
      const int64_t H = spec.Hq, D = spec.D, n_seq = static_cast<int64_t>(cu.size()) - 1;
      for (int64_t n = 0; n < n_seq; ++n) {
        ForwardOutputs one;
        if (cu[n + 1] > cu[n]) {
          HostProblem single = slice_tokens(packed, cu[n], cu[n + 1] - cu[n]);
          single.spec.cu_seqlens.clear();
          single.spec.h0 = single.spec.s0 = true;
          single.h0.assign(packed.h0.begin() + n * H * D * D, packed.h0.begin() + (n + 1) * H * D * D);
          single.s0.assign(packed.s0.begin() + n * H * D * D, packed.s0.begin() + (n + 1) * H * D * D);
          one = run_forward(single, solver(30, 0.02, 16), chunked ? chunked_schedule() : ref::ReferenceOptions{});
          const size_t a = cu[n] * H * D, b = cu[n + 1] * H * D;
          worst = std::fmax(worst, gka_test::rel_error(std::vector<double>(out.o.begin() + a, out.o.begin() + b), one.o));
          worst = std::fmax(worst, gka_test::rel_error(std::vector<double>(out.x.begin() + a, out.x.begin() + b), one.x));
          worst = std::fmax(worst, gka_test::rel_error(std::vector<double>(out.nu.begin() + cu[n] * H, out.nu.begin() + cu[n + 1] * H), one.nu));
        } else {  // an empty sequence passes its initial states through
          one.ht.assign(packed.h0.begin() + n * H * D * D, packed.h0.begin() + (n + 1) * H * D * D);
          one.st.assign(packed.s0.begin() + n * H * D * D, packed.s0.begin() + (n + 1) * H * D * D);
        }
        const size_t s0 = n * H * D * D, s1 = (n + 1) * H * D * D;
        worst = std::fmax(worst, gka_test::rel_error(std::vector<double>(out.ht.begin() + s0, out.ht.begin() + s1), one.ht));
        worst = std::fmax(worst, gka_test::rel_error(std::vector<double>(out.st.begin() + s0, out.st.begin() + s1), one.st));
      }
      INFO("cu_seqlens int32 = " << int32 << ", chunked = " << chunked);
      CHECK(worst == 0.0);
      report(std::string("varlen vs per-sequence runs") + (int32 ? " (int32)" : " (int64)") + (chunked ? " chunked" : ""), worst);
    }
  }
}

TEST_CASE("reference: GQA equals explicitly repeated kv heads", "[cpu][reference]") {
  ProblemSpec spec = gka_test::problem_spec(2, 33, 6, 2, 8);  // B, T, Hq, Hkv, D
  spec.h0 = true;
  const HostProblem gqa = gka_test::random_problem(spec, 21);
  HostProblem full = gqa;
  full.spec.Hkv = spec.Hq;
  const int64_t G = spec.Hq / spec.Hkv, D = spec.D;
  auto repeat = [&](const std::vector<double>& x) {
    std::vector<double> y;
    for (int64_t row = 0; row < spec.B * spec.T; ++row)
      for (int64_t h = 0; h < spec.Hq; ++h) {
        const auto src = x.begin() + (row * spec.Hkv + h / G) * D;
        y.insert(y.end(), src, src + D);
      }
    return y;
  };
  full.k = repeat(gqa.k);
  full.v = repeat(gqa.v);
  for (bool chunked : {false, true}) {
    const ref::ReferenceOptions r = chunked ? chunked_schedule() : ref::ReferenceOptions{};
    const double err = max_output_error(run_forward(gqa, solver(30, 0.02, 16), r), run_forward(full, solver(30, 0.02, 16), r));
    CHECK(err == 0.0);
    report(std::string("GQA vs repeated kv heads") + (chunked ? " chunked" : ""), err);
  }
}

TEST_CASE("reference: extreme gates g = 0, g = -1e4 and mixed give finite outputs", "[cpu][reference]") {
  const char* names[] = {"g = 0", "g = -1e4", "mixed 0 / -1e4 / realistic, separate f"};
  for (int mode = 0; mode < 3; ++mode) {
    ProblemSpec spec = gka_test::problem_spec(1, 100, 2, 2, 16);  // B, T, Hq, Hkv, D
    spec.separate_f = mode == 2;
    spec.h0 = spec.s0 = true;
    HostProblem p = gka_test::random_problem(spec, 31);
    for (size_t i = 0; i < p.g.size(); ++i) {
      if (mode < 2) p.g[i] = mode == 0 ? 0.0 : -1e4;
      else if (i % 3 != 2) p.g[i] = i % 3 == 0 ? 0.0 : -1e4;  // every third token keeps its realistic gate
    }
    for (size_t i = 0; i < p.f.size(); ++i)
      if (i % 4 != 3) p.f[i] = i % 4 == 0 ? -1e4 : 0.0;
    const ForwardOutputs seq = run_forward(p, solver(30, 0.02, 16));
    const ForwardOutputs chk = run_forward(p, solver(30, 0.02, 16), chunked_schedule());
    INFO(names[mode]);
    CHECK(outputs_finite(seq));
    CHECK(outputs_finite(chk));
    const double err = max_output_error(chk, seq);
    CHECK(err < 1e-11);
    report(std::string(names[mode]) + ": chunked vs sequential", err);
  }
}

TEST_CASE("reference: the exact solve with the chunked schedule is refused, not thrown", "[cpu][reference]") {
  ProblemSpec spec;
  const HostProblem p = gka_test::random_problem(spec, 3);
  ForwardOutputs out;
  ref::ReferenceOptions r = chunked_schedule();
  r.method = ref::SolveMethod::kExact;
  const gka::Result res = ref::forward<double>(gka_test::forward_args(p, out, solver()), r);
  CHECK(res.status == gka::Status::kErrorNotSupported);
}

TEST_CASE("reference: r = 0 gives x = q and H still advances", "[cpu][reference]") {
  ProblemSpec spec = gka_test::problem_spec(2, 40, 2, 2, 16);  // B, T, Hq, Hkv, D
  spec.separate_f = true;
  spec.h0 = spec.s0 = true;
  const HostProblem p = gka_test::random_problem(spec, 41);
  HostProblem no_mix = p;  // alpha = 0: q~ = q whatever x is
  for (double& a : no_mix.alpha) a = 0.0;
  const ForwardOutputs solved = run_forward(no_mix, solver(30));
  for (bool chunked : {false, true}) {
    const ForwardOutputs r0 = run_forward(p, solver(0, 0.02, 16), chunked ? chunked_schedule() : ref::ReferenceOptions{});
    CHECK(gka_test::rel_error(r0.x, p.q) == 0.0);
    CHECK(gka_test::rel_error(r0.ht, solved.ht) < 1e-15);  // H advanced exactly as with a solve
    CHECK(gka_test::rel_error(r0.nu, solved.nu) < 1e-13);
    CHECK(gka_test::rel_error(r0.o, solved.o) < 1e-13);
  }
}

TEST_CASE("reference: nu = 0 guard gives x = 0 and no NaN", "[cpu][reference]") {
  ProblemSpec spec = gka_test::problem_spec(2, 21, 2, 1, 16);  // B, T, Hq, Hkv, D
  HostProblem p = gka_test::random_problem(spec, 51);  // no h0: H starts at 0
  const int64_t zero_tokens = 5, D = spec.D;
  for (int64_t t = 0; t < zero_tokens; ++t)
    for (int64_t d = 0; d < D; ++d) p.k[t * D + d] = 0.0;  // batch row 0, the only kv head
  for (bool chunked : {false, true}) {
    const ForwardOutputs out = run_forward(p, solver(30, 0.02, 8), chunked ? chunked_schedule() : ref::ReferenceOptions{});
    CHECK(outputs_finite(out));
    for (int64_t t = 0; t < zero_tokens; ++t)
      for (int64_t h = 0; h < spec.Hq; ++h) {
        CHECK(out.nu[t * spec.Hq + h] == 0.0);
        for (int64_t d = 0; d < D; ++d) CHECK(out.x[(t * spec.Hq + h) * D + d] == 0.0);
      }
    CHECK(out.nu[zero_tokens * spec.Hq] > 0.0);
  }
}

TEST_CASE("reference: fused L2 norm and beta equal pre-processed inputs", "[cpu][reference]") {
  ProblemSpec spec = gka_test::problem_spec(2, 30, 4, 2, 16);  // B, T, Hq, Hkv, D
  spec.h0 = true;
  HostProblem p = gka_test::random_problem(spec, 61);
  // A beta that differs inside each kv group, so every query head scales its own copy of k, v.
  std::mt19937_64 rng(62);
  for (double& b : p.beta) b = std::uniform_real_distribution<double>(0.05, 0.95)(rng);
  const int64_t G = spec.Hq / spec.Hkv, D = spec.D, rows = spec.B * spec.T;

  // The explicit equivalent: H_kv = H_q with k_h = (beta_h + 1e-6) k_unit[h / G], v likewise.
  HostProblem expl = p;
  expl.spec.Hkv = spec.Hq;
  expl.q = gka_test::l2_normalized(p.raw_q, D);
  const std::vector<double> k_unit = gka_test::l2_normalized(p.raw_k, D);
  expl.k.clear();
  expl.v.clear();
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t h = 0; h < spec.Hq; ++h) {
      const double s = p.beta[row * spec.Hq + h] + 1e-6;
      for (int64_t d = 0; d < D; ++d) {
        expl.k.push_back(s * k_unit[(row * spec.Hkv + h / G) * D + d]);
        expl.v.push_back(s * p.raw_v[(row * spec.Hkv + h / G) * D + d]);
      }
    }
  HostProblem fused = p;
  fused.q = p.raw_q;
  fused.k = p.raw_k;
  fused.v = p.raw_v;
  gka::SolverOptions o = solver(30, 0.02, 16);
  const ForwardOutputs want = run_forward(expl, o);
  o.l2norm_qk = true;
  o.fuse_beta = true;
  const double err = max_output_error(run_forward(fused, o), want);
  CHECK(err < 1e-13);
  report("fused l2norm_qk + fuse_beta vs pre-processed", err);

  // Each fusion alone.
  HostProblem only_norm = p;
  only_norm.q = p.raw_q;
  only_norm.k = p.raw_k;
  only_norm.v = p.raw_v;
  HostProblem norm_done = only_norm;
  norm_done.q = gka_test::l2_normalized(p.raw_q, D);
  norm_done.k = k_unit;
  gka::SolverOptions on = solver(30, 0.02, 16);
  const ForwardOutputs want_norm = run_forward(norm_done, on);
  on.l2norm_qk = true;
  CHECK(max_output_error(run_forward(only_norm, on), want_norm) < 1e-13);
}

TEST_CASE("reference: fused input transforms backward matches finite differences", "[cpu][reference]") {
  ProblemSpec spec = gka_test::problem_spec(1, 3, 2, 1, 5);  // B, T, Hq, Hkv, D
  HostProblem p = gka_test::random_problem(spec, 71);
  p.q = p.raw_q;
  p.k = p.raw_k;
  p.v = p.raw_v;
  gka::SolverOptions o;
  o.l2norm_qk = true;
  o.fuse_beta = true;
  const gka::ProblemShape shape = gka_test::shape_of(p);
  const ref::SequenceRange seq{0, 0, 0, spec.T};
  const int64_t h = 1, D = spec.D, n = spec.T * D;
  // L = <wq, q_core> + <wk, k_core> + <wv, v_core> for fixed random weights.
  std::mt19937_64 rng(6);
  const std::vector<double> wq = gka_test::normal_rows(rng, spec.T, D);
  const std::vector<double> wk = gka_test::normal_rows(rng, spec.T, D), wv = gka_test::normal_rows(rng, spec.T, D);
  auto loss = [&](const HostProblem& x) {
    const ref::HeadData<double> d = ref::gather_head<double>(shape, gka_test::inputs_of(x), o, seq, h);
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += wq[i] * d.q[i] + wk[i] * d.k[i] + wv[i] * d.v[i];
    return s;
  };
  std::vector<double> dq = wq, dk = wk, dv = wv, dbeta;
  ref::fused_inputs_backward(shape, gka_test::inputs_of(p), o, seq, h, dq, dk, dv, dbeta);
  REQUIRE(dbeta.size() == static_cast<size_t>(spec.T));
  const double eps = 1e-6;
  double worst = 0;
  auto check = [&](std::vector<double> HostProblem::*member, int64_t index, double analytic) {
    HostProblem a = p, b = p;
    (a.*member)[index] += eps;
    (b.*member)[index] -= eps;
    const double fd = (loss(a) - loss(b)) / (2 * eps);
    worst = std::fmax(worst, std::fabs(fd - analytic) / (std::fabs(analytic) + 1e-3));
  };
  for (int64_t t = 0; t < spec.T; ++t)
    for (int64_t d = 0; d < D; ++d) {
      check(&HostProblem::q, (t * spec.Hq + h) * D + d, dq[t * D + d]);
      check(&HostProblem::k, t * D + d, dk[t * D + d]);
      check(&HostProblem::v, t * D + d, dv[t * D + d]);
    }
  for (int64_t t = 0; t < spec.T; ++t) check(&HostProblem::beta, t * spec.Hq + h, dbeta[t]);
  CHECK(worst < 1e-7);
  report("fused input backward vs finite differences", worst);
}

TEST_CASE("reference: strided inputs and outputs equal contiguous ones", "[cpu][reference]") {
  ProblemSpec spec = gka_test::problem_spec(2, 19, 4, 2, 8);  // B, T, Hq, Hkv, D
  spec.separate_f = true;
  spec.h0 = spec.s0 = true;
  const HostProblem p = gka_test::random_problem(spec, 81);
  const ForwardOutputs want = run_forward(p, solver(30, 0.02, 8));
  const int64_t B = spec.B, T = spec.T, D = spec.D, Hq = spec.Hq, Hkv = spec.Hkv, N = B;

  // Tokens stored [B, H, T, width]; states stored [H, N, D, D + 3] (padded rows).
  auto bhtd = [&](const std::vector<double>& x, int64_t H, int64_t w) {
    std::vector<double> y(x.size());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < w; ++i) y[((b * H + h) * T + t) * w + i] = x[((b * T + t) * H + h) * w + i];
    return y;
  };
  auto view_bhtd = [&](const std::vector<double>& y, int64_t H, int64_t w) {
    return gka::TokenTensor{const_cast<double*>(y.data()), gka::DType::kFP64, H * T * w, w, T * w};
  };
  const int64_t row = D + 3;
  auto padded_states = [&](const std::vector<double>& x) {
    std::vector<double> y(static_cast<size_t>(Hq * N * D * row), -7.0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = 0; j < D; ++j) y[((h * N + n) * D + i) * row + j] = x[((n * Hq + h) * D + i) * D + j];
    return y;
  };
  auto view_states = [&](const std::vector<double>& y) {
    return gka::StateTensor{const_cast<double*>(y.data()), gka::DType::kFP64, D * row, N * D * row, row};
  };
  const std::vector<double> q = bhtd(p.q, Hq, D), k = bhtd(p.k, Hkv, D), v = bhtd(p.v, Hkv, D);
  const std::vector<double> alpha = bhtd(p.alpha, Hq, 1), g = bhtd(p.g, Hq, 1), f = bhtd(p.f, Hq, 1);
  const std::vector<double> h0 = padded_states(p.h0), s0 = padded_states(p.s0);
  std::vector<double> o(want.o.size(), NAN), x(want.x.size(), NAN), nu(want.nu.size(), NAN);
  std::vector<double> ht(h0.size(), NAN), st(h0.size(), NAN);
  gka::ForwardArgs a;
  a.shape = gka_test::shape_of(p);
  a.options = solver(30, 0.02, 8);
  a.in.q = view_bhtd(q, Hq, D);
  a.in.k = view_bhtd(k, Hkv, D);
  a.in.v = view_bhtd(v, Hkv, D);
  a.in.alpha = view_bhtd(alpha, Hq, 1);
  a.in.g = view_bhtd(g, Hq, 1);
  a.in.f = view_bhtd(f, Hq, 1);
  a.in.h0 = view_states(h0);
  a.in.s0 = view_states(s0);
  a.o = view_bhtd(o, Hq, D);
  a.x = view_bhtd(x, Hq, D);
  a.nu = view_bhtd(nu, Hq, 1);
  a.ht = view_states(ht);
  a.st = view_states(st);
  const gka::Result r = ref::forward<double>(a);
  INFO(r.what());
  REQUIRE(r.ok());
  CHECK(gka_test::rel_error(o, bhtd(want.o, Hq, D)) == 0.0);
  CHECK(gka_test::rel_error(x, bhtd(want.x, Hq, D)) == 0.0);
  CHECK(gka_test::rel_error(nu, bhtd(want.nu, Hq, 1)) == 0.0);
  std::vector<double> ht_want = padded_states(want.ht), st_want = padded_states(want.st);
  for (size_t i = 0; i < ht.size(); ++i)
    if (i % row >= static_cast<size_t>(D)) ht_want[i] = st_want[i] = NAN;  // padding is never written
  for (size_t i = 0; i < ht.size(); ++i) {
    if (std::isnan(ht_want[i])) {
      CHECK(std::isnan(ht[i]));
      CHECK(std::isnan(st[i]));
    } else {
      CHECK(ht[i] == ht_want[i]);
      CHECK(st[i] == st_want[i]);
    }
  }
}

TEST_CASE("reference: bf16, fp16 and fp32 inputs load and outputs store correctly", "[cpu][reference]") {
  ProblemSpec spec = gka_test::problem_spec(1, 24, 2, 2, 8);  // B, T, Hq, Hkv, D
  spec.h0 = spec.s0 = true;
  const HostProblem p = gka_test::random_problem(spec, 91);
  const int64_t T = spec.T, H = spec.Hq, D = spec.D;
  for (gka::DType dt : {gka::DType::kBF16, gka::DType::kFP16, gka::DType::kFP32}) {
    // The same inputs stored in dt, and their exactly representable values in fp64.
    auto encode = [&](const std::vector<double>& x, std::vector<uint8_t>& bytes, std::vector<double>& rounded) {
      bytes.assign(x.size() * gka::dtype_size(dt), 0);
      rounded.resize(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        gka::store_from_double(bytes.data(), dt, static_cast<int64_t>(i), x[i]);
        rounded[i] = gka::load_as_double(bytes.data(), dt, static_cast<int64_t>(i));
      }
    };
    std::vector<uint8_t> bq, bk, bv, balpha;
    HostProblem r = p;
    encode(p.q, bq, r.q);
    encode(p.k, bk, r.k);
    encode(p.v, bv, r.v);
    encode(p.alpha, balpha, r.alpha);
    std::vector<float> g32(p.g.begin(), p.g.end()), h032(p.h0.begin(), p.h0.end()), s032(p.s0.begin(), p.s0.end());
    r.g.assign(g32.begin(), g32.end());
    r.h0.assign(h032.begin(), h032.end());
    r.s0.assign(s032.begin(), s032.end());
    const ForwardOutputs want = run_forward(r, solver(30, 0.02, 8));

    std::vector<uint8_t> o(want.o.size() * gka::dtype_size(dt));
    std::vector<float> ht(want.ht.size());
    gka::ForwardArgs a;
    a.shape = gka_test::shape_of(p);
    a.options = solver(30, 0.02, 8);
    a.in.q = gka::TokenTensor::contiguous(bq.data(), dt, T, H, D);
    a.in.k = gka::TokenTensor::contiguous(bk.data(), dt, T, H, D);
    a.in.v = gka::TokenTensor::contiguous(bv.data(), dt, T, H, D);
    a.in.alpha = gka::TokenTensor::contiguous(balpha.data(), dt, T, H, 1);
    a.in.g = gka::TokenTensor::contiguous(g32.data(), gka::DType::kFP32, T, H, 1);
    a.in.h0 = gka::StateTensor::contiguous(h032.data(), gka::DType::kFP32, H, D);
    a.in.s0 = gka::StateTensor::contiguous(s032.data(), gka::DType::kFP32, H, D);
    a.o = gka::TokenTensor::contiguous(o.data(), dt, T, H, D);
    a.ht = gka::StateTensor::contiguous(ht.data(), gka::DType::kFP32, H, D);
    const gka::Result res = ref::forward<double>(a);
    INFO(res.what() << " dtype " << gka::dtype_name(dt));
    REQUIRE(res.ok());
    size_t mismatches = 0;
    for (size_t i = 0; i < want.o.size(); ++i) {
      std::vector<uint8_t> expected(gka::dtype_size(dt));
      gka::store_from_double(expected.data(), dt, 0, want.o[i]);
      mismatches += std::memcmp(expected.data(), o.data() + i * gka::dtype_size(dt), expected.size()) != 0;
    }
    CHECK(mismatches == 0);  // o is the fp64 result rounded once to dt
    for (size_t i = 0; i < ht.size(); ++i) mismatches += ht[i] != static_cast<float>(want.ht[i]);
    CHECK(mismatches == 0);
  }
}

TEST_CASE("reference: decode continues a forward through the state pool", "[cpu][reference]") {
  ProblemSpec spec = gka_test::problem_spec(3, 23, 4, 2, 8);  // B, T, Hq, Hkv, D
  spec.separate_f = true;
  spec.h0 = spec.s0 = true;
  const int64_t m = 3, prefix = spec.T - m, B = spec.B, Hq = spec.Hq, D = spec.D, DD = D * D;
  const HostProblem full = gka_test::random_problem(spec, 101);
  HostProblem head = slice_tokens(full, 0, prefix);
  head.spec.h0 = head.spec.s0 = true;
  head.h0 = full.h0;
  head.s0 = full.s0;
  const HostProblem tail = slice_tokens(full, prefix, m);
  const ForwardOutputs want = run_forward(full, solver());
  const ForwardOutputs pre = run_forward(head, solver());
  const ForwardOutputs fresh = run_forward(tail, solver());  // the tail from zero states

  const int64_t num_slots = 7, pad = num_slots - 1;
  const std::vector<int32_t> read = {4, 0, 2}, write = {1, 5, 3};
  for (int variant = 0; variant < 3; ++variant) {  // 0: plain, 1: sequence 1 padded, 2: sequence 2 fresh
    std::vector<double> pool_h(static_cast<size_t>(num_slots * Hq * DD), 0.5), pool_s(pool_h.size(), -0.25);
    for (int64_t n = 0; n < B; ++n)
      for (int64_t i = 0; i < Hq * DD; ++i) {
        pool_h[read[n] * Hq * DD + i] = pre.ht[n * Hq * DD + i];
        pool_s[read[n] * Hq * DD + i] = pre.st[n * Hq * DD + i];
      }
    const std::vector<double> pool_h_before = pool_h, pool_s_before = pool_s;
    std::vector<int32_t> read_slots = read;
    if (variant == 1) read_slots[1] = static_cast<int32_t>(pad);
    const uint8_t has_initial[3] = {1, 1, 0};

    gka::DecodeArgs a;
    a.shape = gka_test::shape_of(tail);
    a.in = gka_test::inputs_of(tail);
    a.options = solver();
    a.pool.h = gka::StateTensor::contiguous(pool_h.data(), gka::DType::kFP64, Hq, D);
    a.pool.s = gka::StateTensor::contiguous(pool_s.data(), gka::DType::kFP64, Hq, D);
    a.pool.num_slots = num_slots;
    a.pool.read_slots = read_slots.data();
    a.pool.write_slots = write.data();
    a.pool.slot_type = gka::IndexType::kInt32;
    a.pool.pad_slot = pad;
    if (variant == 2) a.pool.has_initial_state = has_initial;
    std::vector<double> o(tail.q.size(), NAN), inter_h(static_cast<size_t>(B * m * Hq * DD), NAN);
    a.o = gka::TokenTensor::contiguous(o.data(), gka::DType::kFP64, m, Hq, D);
    a.inter_h = gka::StateTensor::contiguous(inter_h.data(), gka::DType::kFP64, Hq, D);
    const gka::Result r = ref::decode<double>(a);
    INFO(r.what() << " variant " << variant);
    REQUIRE(r.ok());

    double worst = 0;
    for (int64_t n = 0; n < B; ++n) {
      const bool skipped = variant == 1 && n == 1, from_zero = variant == 2 && n == 2;
      const ForwardOutputs& src = from_zero ? fresh : want;
      for (int64_t j = 0; j < m; ++j)
        for (int64_t i = 0; i < Hq * D; ++i) {
          const double got = o[(n * m + j) * Hq * D + i];
          if (skipped) {
            CHECK(std::isnan(got));
            continue;
          }
          const int64_t t = from_zero ? j : prefix + j, T = from_zero ? m : spec.T;
          const double w = src.o[(n * T + t) * Hq * D + i];
          worst = std::fmax(worst, std::fabs(got - w) / (std::fabs(w) + 1e-300));
        }
      const double* hs = &pool_h[write[n] * Hq * DD];
      const double* ss = &pool_s[write[n] * Hq * DD];
      const double* last = &inter_h[(n * m + m - 1) * Hq * DD];
      for (int64_t i = 0; i < Hq * DD; ++i) {
        if (skipped) {
          CHECK(hs[i] == pool_h_before[write[n] * Hq * DD + i]);
          continue;
        }
        worst = std::fmax(worst, std::fabs(hs[i] - src.ht[n * Hq * DD + i]) / (std::fabs(src.ht[n * Hq * DD + i]) + 1e-300));
        worst = std::fmax(worst, std::fabs(ss[i] - src.st[n * Hq * DD + i]) / (std::fabs(src.st[n * Hq * DD + i]) + 1e-300));
        CHECK(last[i] == hs[i]);
      }
      // The read slots keep their states (every write went to a separate slot).
      if (!skipped)
        for (int64_t i = 0; i < Hq * DD; ++i) CHECK(pool_h[read[n] * Hq * DD + i] == pool_h_before[read[n] * Hq * DD + i]);
    }
    CHECK(pool_h[pad * Hq * DD] == pool_h_before[pad * Hq * DD]);
    CHECK(worst < 1e-12);
    report("decode continuity (variant " + std::to_string(variant) + "), max elementwise rel", worst);
  }
}

TEST_CASE("reference: varlen decode equals a forward per sequence from its slot", "[cpu][reference]") {
  ProblemSpec spec;
  spec.B = 1;
  spec.cu_seqlens = {0, 1, 4, 4, 6};  // 1, 3, 0 and 2 tokens
  spec.T = 6;
  spec.Hq = 2;
  spec.Hkv = 1;
  spec.D = 8;
  spec.h0 = spec.s0 = true;  // the pool contents: state n sits in slot 3 - n
  const HostProblem p = gka_test::random_problem(spec, 111);
  const int64_t Hq = spec.Hq, D = spec.D, DD = D * D, n_seq = 4;
  std::vector<double> pool_h(static_cast<size_t>(n_seq * Hq * DD)), pool_s(pool_h.size());
  const std::vector<int64_t> slots = {3, 2, 1, 0};
  for (int64_t n = 0; n < n_seq; ++n)
    for (int64_t i = 0; i < Hq * DD; ++i) {
      pool_h[slots[n] * Hq * DD + i] = p.h0[n * Hq * DD + i];
      pool_s[slots[n] * Hq * DD + i] = p.s0[n * Hq * DD + i];
    }
  gka::DecodeArgs a;
  a.shape = gka_test::shape_of(p);
  a.in = gka_test::inputs_of(p);
  a.options = solver(5, 0.1);
  a.pool.h = gka::StateTensor::contiguous(pool_h.data(), gka::DType::kFP64, Hq, D);
  a.pool.s = gka::StateTensor::contiguous(pool_s.data(), gka::DType::kFP64, Hq, D);
  a.pool.num_slots = n_seq;
  a.pool.read_slots = slots.data();
  a.pool.slot_type = gka::IndexType::kInt64;
  std::vector<double> o(p.q.size(), NAN);
  a.o = gka::TokenTensor::contiguous(o.data(), gka::DType::kFP64, spec.T, Hq, D);
  REQUIRE(ref::decode<double>(a).ok());
  const ForwardOutputs want = run_forward(p, solver(5, 0.1));  // h0/s0 hold the same states
  CHECK(gka_test::rel_error(o, want.o) == 0.0);
  for (int64_t n = 0; n < n_seq; ++n)
    for (int64_t i = 0; i < Hq * DD; ++i) {
      CHECK(pool_h[slots[n] * Hq * DD + i] == want.ht[n * Hq * DD + i]);
      CHECK(pool_s[slots[n] * Hq * DD + i] == want.st[n * Hq * DD + i]);
    }
}
