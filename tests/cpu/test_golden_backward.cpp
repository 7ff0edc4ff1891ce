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
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/compare.h"
#include "common/golden.h"
#include "gka/reference/operator_backward.h"

namespace {

namespace ref = gka::reference;
using Vec = std::vector<double>;
constexpr double kGoldenBackwardTolerance = 1e-9;

gka::TokenTensor token_view(Vec& x, int64_t T, int64_t H, int64_t width) {
  if (x.empty()) return gka::TokenTensor{};
  return gka::TokenTensor::contiguous(x.data(), gka::DType::kFP64, T, H, width);
}
gka::StateTensor state_view(Vec& x, int64_t H, int64_t D) {
  if (x.empty()) return gka::StateTensor{};
  return gka::StateTensor::contiguous(x.data(), gka::DType::kFP64, H, D);
}

enum class Loss { kMain, kNoLambda, kDoOnly };
const char* prefix(Loss l) { return l == Loss::kMain ? "" : l == Loss::kNoLambda ? "nolam_" : "doonly_"; }

struct Grads {
  Vec dq, dk, dv, dalpha, dg, df, dh0, ds0;
};

Grads run_case_backward(const gka_test::GoldenCase& c, Loss loss, ref::Schedule schedule) {
  const int64_t B = c.integer("B"), T = c.integer("T"), H = c.integer("H"), Hkv = c.integer("H_kv");
  const int64_t D = c.integer("D"), N = c.integer("N_states");
  Vec q = c.f64("q"), k = c.f64("k"), v = c.f64("v"), alpha = c.f64("alpha"), g = c.f64("g");
  Vec f = c.has("f") ? c.f64("f") : Vec(), h0 = c.has("h0") ? c.f64("h0") : Vec();
  Vec s0 = c.has("s0") ? c.f64("s0") : Vec();
  Vec d_o = c.f64("do"), d_ht = c.f64("dHT"), d_st = c.f64("dST");
  Vec x = c.f64("x"), nu = c.f64("nu");
  std::vector<int64_t> cu = c.is_null("cu_seqlens") ? std::vector<int64_t>() : gka_test::json_int_list(c.field("cu_seqlens"));
  REQUIRE(q.size() == static_cast<size_t>(B * T * H * D));
  REQUIRE(k.size() == static_cast<size_t>(B * T * Hkv * D));
  REQUIRE(d_o.size() == q.size());
  if (loss == Loss::kDoOnly) d_ht.clear(), d_st.clear();

  Grads out;
  out.dq.assign(q.size(), NAN);
  out.dk.assign(k.size(), NAN);
  out.dv.assign(k.size(), NAN);
  out.dalpha.assign(static_cast<size_t>(B * T * H), NAN);
  out.dg.assign(out.dalpha.size(), NAN);
  if (!f.empty()) out.df.assign(out.dalpha.size(), NAN);
  out.dh0.assign(static_cast<size_t>(N * H * D * D), NAN);
  out.ds0.assign(out.dh0.size(), NAN);

  gka::BackwardArgs a;
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
  a.in.q = token_view(q, T, H, D);
  a.in.k = token_view(k, T, Hkv, D);
  a.in.v = token_view(v, T, Hkv, D);
  a.in.alpha = token_view(alpha, T, H, 1);
  a.in.g = token_view(g, T, H, 1);
  a.in.f = token_view(f, T, H, 1);
  a.in.h0 = state_view(h0, H, D);
  a.in.s0 = state_view(s0, H, D);
  a.options.num_iter = static_cast<int>(c.integer("num_iter"));
  a.options.ridge_ratio = c.number("ratio");
  a.options.scale = c.number("scale");
  a.options.chunk_size = 16;
  a.bp_lambda = loss != Loss::kNoLambda;
  if (schedule == ref::Schedule::kChunked) {  // also exercise the saved-tensor path
    a.x = token_view(x, T, H, D);
    a.nu = token_view(nu, T, H, 1);
  }
  a.d_o = token_view(d_o, T, H, D);
  a.d_ht = state_view(d_ht, H, D);
  a.d_st = state_view(d_st, H, D);
  a.dq = token_view(out.dq, T, H, D);
  a.dk = token_view(out.dk, T, Hkv, D);
  a.dv = token_view(out.dv, T, Hkv, D);
  a.dalpha = token_view(out.dalpha, T, H, 1);
  a.dg = token_view(out.dg, T, H, 1);
  a.df = token_view(out.df, T, H, 1);
  a.dh0 = state_view(out.dh0, H, D);
  a.ds0 = state_view(out.ds0, H, D);
  ref::ReferenceOptions opts;
  opts.schedule = schedule;
  const gka::Result r = ref::backward<double>(a, opts);
  INFO(r.what());
  REQUIRE(r.ok());
  return out;
}

}  // namespace

TEST_CASE("golden backward: every gradient file of every forward_backward case", "[cpu][reference][backward][golden]") {
  const std::string dir = GKA_CASES_DIR;
  if (!gka_test::directory_exists(dir)) {
    WARN("SKIPPED: golden cases not found at " << dir);
    std::printf("SKIPPED: golden cases not found at %s\n", dir.c_str());
    return;
  }
  const bool verbose = std::getenv("GKA_TEST_VERBOSE") != nullptr;
  int cases = 0, compared = 0;
  double worst = 0;
  std::string worst_what;
  for (const std::string& name : gka_test::golden_case_names(dir)) {
    gka_test::GoldenCase c;
    REQUIRE(gka_test::load_golden_case(dir, name, &c).empty());
    if (c.text("kind") != "forward_backward") continue;
    ++cases;
    for (Loss loss : {Loss::kMain, Loss::kNoLambda, Loss::kDoOnly}) {
      for (ref::Schedule sched : {ref::Schedule::kSequential, ref::Schedule::kChunked}) {
        const Grads got = run_case_backward(c, loss, sched);
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
  std::printf("[golden backward] %d cases, %d gradient comparisons, max rel error %.3e (%s)\n", cases, compared,
              worst, worst_what.c_str());
  CHECK(cases > 0);
}
