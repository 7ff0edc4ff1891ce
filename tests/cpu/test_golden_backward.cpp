// The float64 reference backward against the gradient files of the golden cases (GKA_CASES_DIR,
// see its README.md): for every forward_backward case, the main gradients (bp_lambda = true, with
// dH_T and dS_T), nolam_* (bp_lambda = false) and doonly_* (dH_T = dS_T = 0), each through the
// global formulas (x, nu recomputed) and the chunk-wise schedule with C = 16 (the case's saved x, nu).
//
// Tolerance 1e-9 relative (||a - b|| / ||b|| per gradient): both sides are float64 evaluations of
// the same formulas in a different summation order. The forward agrees to ~1e-14; the backward adds
// a second solve (z) and long reverse accumulations, each amplifying rounding by at most
// kappa(A) <= 51, so ~1e-12 is expected and a wrong term shows up at >= 1e-6.
// Set GKA_TEST_VERBOSE=1 to print the error of every gradient.
#include "common/catch.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/compare.h"
#include "common/golden.h"
#include "common/random_inputs.h"
#include "gka/reference/operator_backward.h"

namespace {

namespace ref = gka::reference;
using Vec = std::vector<double>;
constexpr double kGoldenBackwardTolerance = 1e-9;

enum class Loss { kMain, kNoLambda, kDoOnly };
const char* prefix(Loss l) { return l == Loss::kMain ? "" : l == Loss::kNoLambda ? "nolam_" : "doonly_"; }

// Runs the reference backward on a forward_backward case with the loss's incoming gradients; the
// chunked schedule also gets the case's saved x and nu (the saved-tensor path).
gka_test::BackwardOutputs run_case_backward(const gka_test::GoldenCase& c, Loss loss, ref::Schedule schedule) {
  const gka_test::HostProblem p = gka_test::golden_problem(c);
  const gka_test::ProblemSpec& s = p.spec;
  gka_test::LossGradients w;
  w.d_o = c.f64("do");
  if (loss != Loss::kDoOnly) {
    w.d_ht = c.f64("dHT");
    w.d_st = c.f64("dST");
  }
  Vec x = c.f64("x"), nu = c.f64("nu");
  REQUIRE(p.q.size() == static_cast<size_t>(s.B * s.T * s.Hq * s.D));
  REQUIRE(p.k.size() == static_cast<size_t>(s.B * s.T * s.Hkv * s.D));
  REQUIRE(w.d_o.size() == p.q.size());

  gka::SolverOptions options = gka_test::golden_solver_options(c);
  options.chunk_size = 16;
  gka_test::BackwardOutputs out;
  gka::BackwardArgs a = gka_test::backward_args(p, w, out, options, /*bp_lambda=*/loss != Loss::kNoLambda);
  if (schedule == ref::Schedule::kChunked) {
    a.x = gka_test::token_view(x, s.T, s.Hq, s.D);
    a.nu = gka_test::token_view(nu, s.T, s.Hq, 1);
  }
  ref::ReferenceOptions opts;
  opts.schedule = schedule;
  const gka::Result r = ref::backward<double>(a, opts);
  INFO(r.what());
  REQUIRE(r.ok());
  return out;
}

}  // namespace

TEST_CASE("golden backward: every gradient file of every forward_backward case", "[cpu][reference][backward][golden]") {
  GKA_GOLDEN_CASES_OR_SKIP(golden, "forward_backward");
  const bool verbose = std::getenv("GKA_TEST_VERBOSE") != nullptr;
  int checked = 0, compared = 0;
  double worst = 0;
  std::string worst_what;
  for (const gka_test::GoldenCase& c : golden.cases) {
    const std::string& name = c.name;
    ++checked;
    for (Loss loss : {Loss::kMain, Loss::kNoLambda, Loss::kDoOnly}) {
      for (ref::Schedule sched : {ref::Schedule::kSequential, ref::Schedule::kChunked}) {
        const gka_test::BackwardOutputs got = run_case_backward(c, loss, sched);
        const struct { const char* file; const Vec* grad; } files[] = {
            {"dq", &got.dq},   {"dk", &got.dk},   {"dv", &got.dv},   {"dalpha", &got.dalpha},
            {"dg", &got.dg},   {"df", &got.df},   {"dh0", &got.dh0}, {"ds0", &got.ds0}};
        for (const auto& fg : files) {
          const std::string file = std::string(prefix(loss)) + fg.file;
          if (!c.has(file)) continue;  // nolam_* holds only the gradients bp_lambda changes
          const Vec want = c.f64(file);
          const double err = gka_test::rel_error(*fg.grad, want);
          const std::string what = name + "/" + file + (sched == ref::Schedule::kChunked ? " (chunked C=16)" : " (global)");
          if (verbose) std::printf("[golden backward] %-60s %.3e\n", what.c_str(), err);
          if (err > worst) worst = err, worst_what = what;
          ++compared;
          INFO(what << ": rel error " << err);
          CHECK(err < kGoldenBackwardTolerance);
        }
      }
    }
  }
  std::printf("[golden backward] %d cases, %d gradient comparisons, max rel error %.3e (%s)\n", checked, compared,
              worst, worst_what.c_str());
  CHECK(checked > 0);
}
