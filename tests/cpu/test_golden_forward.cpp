// The float64 reference forward and decode against the golden cases of an independent float64
// NumPy implementation (GKA_CASES_DIR; see its README.md).
//
// Tolerance 1e-10 relative (||a - b|| / ||b|| per output): both sides are float64 evaluations of
// the same recurrences and differ only in summation order (~1e-16 per operation). The Chebyshev
// solve amplifies such differences by at most about kappa(A_t) <= (1 + a)/a = 51 (11 at a = 0.1),
// and nothing accumulates across tokens beyond that, so agreement is ~1e-14 in practice and 1e-10
// leaves room without hiding a wrong formula (a real mistake shows up at >= 1e-6).
// Set GKA_TEST_VERBOSE=1 to print the error of every case.
#include "common/catch.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/compare.h"
#include "common/golden.h"
#include "gka/reference/reference.h"

namespace {

namespace ref = gka::reference;
constexpr double kGoldenTolerance = 1e-10;

bool verbose() { return std::getenv("GKA_TEST_VERBOSE") != nullptr; }

enum class Variant { kSequential, kChunked16, kFusedInputs };

// Runs the reference forward on a forward_backward case; the inputs are the case's arrays
// (or its raw_* arrays and beta with both fusions on, for kFusedInputs).
gka_test::ForwardOutputs run_case_forward(const gka_test::GoldenCase& c, Variant variant) {
  const gka_test::HostProblem p = gka_test::golden_problem(c);
  const bool fused = variant == Variant::kFusedInputs;
  const gka_test::ProblemSpec& s = p.spec;
  REQUIRE((fused ? p.raw_q : p.q).size() == static_cast<size_t>(s.B * s.T * s.Hq * s.D));
  REQUIRE((fused ? p.raw_k : p.k).size() == static_cast<size_t>(s.B * s.T * s.Hkv * s.D));

  gka::SolverOptions options = gka_test::golden_solver_options(c);
  options.chunk_size = 16;
  options.l2norm_qk = options.fuse_beta = fused;
  gka_test::ForwardOutputs out;
  gka::ForwardArgs a = gka_test::forward_args(p, out, options);
  a.in = gka_test::inputs_of(p, /*raw_qkv=*/fused);
  ref::ReferenceOptions r;
  if (variant == Variant::kChunked16) r.schedule = ref::Schedule::kChunked;
  const gka::Result res = ref::forward<double>(a, r);
  INFO(res.what());
  REQUIRE(res.ok());
  return out;
}

}  // namespace

TEST_CASE("golden: reference forward matches the independent float64 implementation "
          "(prints SKIPPED when the cases are absent)", "[cpu][reference][golden]") {
  GKA_GOLDEN_CASES_OR_SKIP(golden, "forward_backward");
  int checked = 0;
  double worst[3] = {0, 0, 0};
  for (const gka_test::GoldenCase& c : golden.cases) {
    const std::string& name = c.name;
    const char* outputs[] = {"o", "x", "nu", "H_T", "S_T"};
    const std::vector<double> want[] = {c.f64("o"), c.f64("x"), c.f64("nu"), c.f64("H_T"), c.f64("S_T")};
    for (Variant variant : {Variant::kSequential, Variant::kChunked16, Variant::kFusedInputs}) {
      const gka_test::ForwardOutputs got = run_case_forward(c, variant);
      const std::vector<double>* have[] = {&got.o, &got.x, &got.nu, &got.ht, &got.st};
      for (int i = 0; i < 5; ++i) {
        const double err = gka_test::rel_error(*have[i], want[i]);
        INFO("case " << name << ", variant " << static_cast<int>(variant) << ", output " << outputs[i]);
        CHECK(err < kGoldenTolerance);
        worst[static_cast<int>(variant)] = std::fmax(worst[static_cast<int>(variant)], err);
        if (verbose()) std::printf("  %-28s v%d %-4s %.3e\n", name.c_str(), static_cast<int>(variant), outputs[i], err);
      }
    }
    ++checked;
  }
  CHECK(checked >= 1);
  if (verbose())
    std::printf("  golden forward: %d cases; max rel error sequential %.3e, chunked(C=16) %.3e, fused inputs %.3e\n",
                checked, worst[0], worst[1], worst[2]);
}

TEST_CASE("golden: reference decode matches the independent float64 implementation "
          "(prints SKIPPED when the cases are absent)", "[cpu][reference][golden]") {
  GKA_GOLDEN_CASES_OR_SKIP(golden, "decode");
  int checked = 0;
  double worst = 0;
  for (const gka_test::GoldenCase& c : golden.cases) {
    const std::string& name = c.name;
    const gka_test::HostProblem p = gka_test::golden_problem(c);
    const int64_t N = c.integer("N_seq"), P = c.integer("pool_size");
    const int64_t T = p.spec.T, H = p.spec.Hq, D = p.spec.D;
    std::vector<double> pool_h = c.f64("pool_H"), pool_s = c.f64("pool_S");
    std::vector<int64_t> slots = c.i64("slots");
    std::vector<uint8_t> has_initial = c.has("has_initial_state") ? c.bytes("has_initial_state") : std::vector<uint8_t>();
    REQUIRE(slots.size() == static_cast<size_t>(N));
    REQUIRE(pool_h.size() == static_cast<size_t>(P * H * D * D));
    REQUIRE(p.q.size() == static_cast<size_t>(p.spec.B * T * H * D));

    gka::DecodeArgs a;
    a.shape = gka_test::shape_of(p);
    a.in = gka_test::inputs_of(p);
    a.options = gka_test::golden_solver_options(c);
    a.pool.h = gka_test::state_view(pool_h, H, D);
    a.pool.s = gka_test::state_view(pool_s, H, D);
    a.pool.num_slots = P;
    a.pool.read_slots = slots.data();
    a.pool.slot_type = gka::IndexType::kInt64;
    a.pool.has_initial_state = has_initial.empty() ? nullptr : has_initial.data();
    std::vector<double> o(p.q.size(), NAN);
    a.o = gka_test::token_view(o, T, H, D);
    const gka::Result res = ref::decode<double>(a);
    INFO("case " << name << ": " << res.what());
    REQUIRE(res.ok());
    const double errs[] = {gka_test::rel_error(o, c.f64("o")), gka_test::rel_error(pool_h, c.f64("pool_H_out")),
                           gka_test::rel_error(pool_s, c.f64("pool_S_out"))};
    for (double e : errs) {
      CHECK(e < kGoldenTolerance);
      worst = std::fmax(worst, e);
    }
    if (verbose()) std::printf("  %-28s o %.3e pool_H %.3e pool_S %.3e\n", name.c_str(), errs[0], errs[1], errs[2]);
    ++checked;
  }
  CHECK(checked >= 1);
  if (verbose()) std::printf("  golden decode: %d cases; max rel error %.3e\n", checked, worst);
}
