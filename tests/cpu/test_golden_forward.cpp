// The float64 reference forward and decode against the golden cases of an independent float64
// NumPy implementation (GKA_CASES_DIR; see its README.md).
//
// Tolerance 1e-10 relative (||a - b|| / ||b|| per output): both sides are float64 evaluations of
// the same recurrences and differ only in summation order (~1e-16 per operation). The Chebyshev
// solve amplifies such differences by at most about kappa(A_t) <= (1 + a)/a = 51 (11 at a = 0.1),
// and nothing accumulates across tokens beyond that, so agreement is ~1e-14 in practice and 1e-10
// leaves room without hiding a wrong formula (a real mistake shows up at >= 1e-6).
// Set GKA_TEST_VERBOSE=1 to print the error of every case.
#include <catch2/catch.hpp>

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

gka::TokenTensor token_view(std::vector<double>& x, int64_t T, int64_t H, int64_t width) {
  if (x.empty()) return gka::TokenTensor{};
  return gka::TokenTensor::contiguous(x.data(), gka::DType::kFP64, T, H, width);
}
gka::StateTensor state_view(std::vector<double>& x, int64_t H, int64_t D) {
  if (x.empty()) return gka::StateTensor{};
  return gka::StateTensor::contiguous(x.data(), gka::DType::kFP64, H, D);
}

gka::SolverOptions case_options(const gka_test::GoldenCase& c) {
  gka::SolverOptions o;
  o.num_iter = static_cast<int>(c.integer("num_iter"));
  o.ridge_ratio = c.number("ratio");
  o.scale = c.number("scale");
  return o;
}

struct ForwardRun {
  std::vector<double> o, x, nu, ht, st;
};

enum class Variant { kSequential, kChunked16, kFusedInputs };

// Runs the reference forward on a forward_backward case; the inputs are the case's arrays
// (or its raw_* arrays and beta with both fusions on, for kFusedInputs).
ForwardRun run_case_forward(const gka_test::GoldenCase& c, Variant variant) {
  const int64_t B = c.integer("B"), T = c.integer("T"), H = c.integer("H"), Hkv = c.integer("H_kv");
  const int64_t D = c.integer("D"), N = c.integer("N_states");
  const bool fused = variant == Variant::kFusedInputs;
  std::vector<double> q = c.f64(fused ? "raw_q" : "q"), k = c.f64(fused ? "raw_k" : "k"), v = c.f64(fused ? "raw_v" : "v");
  std::vector<double> alpha = c.f64("alpha"), g = c.f64("g"), beta = c.f64("beta");
  std::vector<double> f = c.has("f") ? c.f64("f") : std::vector<double>();
  std::vector<double> h0 = c.has("h0") ? c.f64("h0") : std::vector<double>();
  std::vector<double> s0 = c.has("s0") ? c.f64("s0") : std::vector<double>();
  std::vector<int64_t> cu = c.has("cu_seqlens") ? c.i64("cu_seqlens") : std::vector<int64_t>();
  REQUIRE(q.size() == static_cast<size_t>(B * T * H * D));
  REQUIRE(k.size() == static_cast<size_t>(B * T * Hkv * D));

  ForwardRun out;
  out.o.assign(q.size(), NAN);
  out.x.assign(q.size(), NAN);
  out.nu.assign(static_cast<size_t>(B * T * H), NAN);
  out.ht.assign(static_cast<size_t>(N * H * D * D), NAN);
  out.st.assign(out.ht.size(), NAN);
  gka::ForwardArgs a;
  a.shape.batch = B;
  a.shape.seqlen = T;
  a.shape.heads_q = H;
  a.shape.heads_kv = Hkv;
  a.shape.head_dim = D;
  if (!cu.empty()) {
    a.shape.cu_seqlens.data = cu.data();
    a.shape.cu_seqlens.type = gka::IndexType::kInt64;
    a.shape.cu_seqlens.num_seqs = static_cast<int64_t>(cu.size()) - 1;
  }
  a.options = case_options(c);
  a.options.chunk_size = 16;
  a.options.l2norm_qk = a.options.fuse_beta = fused;
  a.in.q = token_view(q, T, H, D);
  a.in.k = token_view(k, T, Hkv, D);
  a.in.v = token_view(v, T, Hkv, D);
  a.in.alpha = token_view(alpha, T, H, 1);
  a.in.g = token_view(g, T, H, 1);
  a.in.f = token_view(f, T, H, 1);
  a.in.beta = token_view(beta, T, H, 1);
  a.in.h0 = state_view(h0, H, D);
  a.in.s0 = state_view(s0, H, D);
  a.o = token_view(out.o, T, H, D);
  a.x = token_view(out.x, T, H, D);
  a.nu = token_view(out.nu, T, H, 1);
  a.ht = state_view(out.ht, H, D);
  a.st = state_view(out.st, H, D);
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
  const std::string dir = GKA_CASES_DIR;
  if (!gka_test::directory_exists(dir)) {
    WARN("SKIPPED: golden cases not found at " << dir << " (set -DGKA_CASES_DIR=...)");
    return;
  }
  int checked = 0;
  double worst[3] = {0, 0, 0};
  for (const std::string& name : gka_test::golden_case_names(dir)) {
    gka_test::GoldenCase c;
    REQUIRE(gka_test::load_golden_case(dir, name, &c).empty());
    if (c.text("kind") != "forward_backward") continue;
    const char* outputs[] = {"o", "x", "nu", "H_T", "S_T"};
    const std::vector<double> want[] = {c.f64("o"), c.f64("x"), c.f64("nu"), c.f64("H_T"), c.f64("S_T")};
    for (Variant variant : {Variant::kSequential, Variant::kChunked16, Variant::kFusedInputs}) {
      const ForwardRun got = run_case_forward(c, variant);
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
  const std::string dir = GKA_CASES_DIR;
  if (!gka_test::directory_exists(dir)) {
    WARN("SKIPPED: golden cases not found at " << dir << " (set -DGKA_CASES_DIR=...)");
    return;
  }
  int checked = 0;
  double worst = 0;
  for (const std::string& name : gka_test::golden_case_names(dir)) {
    gka_test::GoldenCase c;
    REQUIRE(gka_test::load_golden_case(dir, name, &c).empty());
    if (c.text("kind") != "decode") continue;
    const int64_t H = c.integer("H"), Hkv = c.integer("H_kv"), D = c.integer("D"), N = c.integer("N_seq");
    const int64_t P = c.integer("pool_size");
    std::vector<double> q = c.f64("q"), k = c.f64("k"), v = c.f64("v"), alpha = c.f64("alpha"), g = c.f64("g");
    std::vector<double> f = c.has("f") ? c.f64("f") : std::vector<double>();
    std::vector<double> pool_h = c.f64("pool_H"), pool_s = c.f64("pool_S");
    std::vector<int64_t> slots = c.i64("slots");
    std::vector<int64_t> cu = c.has("cu_seqlens") ? c.i64("cu_seqlens") : std::vector<int64_t>();
    std::vector<uint8_t> has_initial = c.has("has_initial_state") ? c.bytes("has_initial_state") : std::vector<uint8_t>();
    REQUIRE(slots.size() == static_cast<size_t>(N));
    REQUIRE(pool_h.size() == static_cast<size_t>(P * H * D * D));

    gka::DecodeArgs a;
    a.shape.batch = cu.empty() ? N : 1;
    a.shape.seqlen = cu.empty() ? c.integer("m") : cu.back();
    a.shape.heads_q = H;
    a.shape.heads_kv = Hkv;
    a.shape.head_dim = D;
    if (!cu.empty()) {
      a.shape.cu_seqlens.data = cu.data();
      a.shape.cu_seqlens.type = gka::IndexType::kInt64;
      a.shape.cu_seqlens.num_seqs = N;
    }
    const int64_t T = a.shape.seqlen;
    REQUIRE(q.size() == static_cast<size_t>(a.shape.batch * T * H * D));
    a.options = case_options(c);
    a.in.q = token_view(q, T, H, D);
    a.in.k = token_view(k, T, Hkv, D);
    a.in.v = token_view(v, T, Hkv, D);
    a.in.alpha = token_view(alpha, T, H, 1);
    a.in.g = token_view(g, T, H, 1);
    a.in.f = token_view(f, T, H, 1);
    a.pool.h = state_view(pool_h, H, D);
    a.pool.s = state_view(pool_s, H, D);
    a.pool.num_slots = P;
    a.pool.read_slots = slots.data();
    a.pool.slot_type = gka::IndexType::kInt64;
    a.pool.has_initial_state = has_initial.empty() ? nullptr : has_initial.data();
    std::vector<double> o(q.size(), NAN);
    a.o = token_view(o, T, H, D);
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
