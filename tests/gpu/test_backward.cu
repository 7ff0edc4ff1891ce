// tests/gpu/test_backward.cu: the CUDA backward against the float64 reference backward
// (gka::reference::backward on the same rounded inputs and incoming gradients, which recomputes x and
// nu in float64), on fresh realistic random inputs. The GPU side runs gka::forward (saving x in fp32
// and nu) and then gka::backward. Every gradient is NaN-poisoned before each launch; two runs must
// be bitwise equal; a CUDA-graph capture and replay must reproduce them; the saved-states and the
// recompute-x modes must agree with the default; bad arguments give the right Status. Each
// configuration prints one "ERR|" line with the relative L2 error of every gradient.
#include "common/catch.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "common/compare.h"
#include "common/device.h"
#include "common/random_inputs.h"
#include "gka/api/backward.cuh"
#include "gka/gka.h"
#include "gka/reference/reference.h"

namespace {

using gka_test::DevBuf;
using gka_test::HostTensor;

enum class Mode { kSavedX, kSavedStates, kRecomputeX };

struct BwdCase {
  std::string name;
  gka_test::ProblemSpec spec;
  gka::DType dtype = gka::DType::kBF16;
  int num_iter = 30;
  bool bp_lambda = true;
  bool d_final = true;  // incoming dH_T / dS_T
  bool fused = false;   // l2norm_qk + fuse_beta on raw inputs
  bool cu_int32 = true;
  gka::DType state_dtype = gka::DType::kFP32;  // the forward's chunk states (kSavedStates)
  int scan_segments = 0;                       // BackwardArgs::scan_segments (0: chosen from the shape)
  std::function<void(gka_test::HostProblem&)> mutate;
  double tol = 5e-2;     // every gradient but dk; set per dtype by mk()
  double tol_dk = 5e-2;  // dk; set per dtype by mk()
};

// Gradients in the order of the ERR line.
constexpr int kNumGrads = 9;
const char* const kGradNames[kNumGrads] = {"dq", "dk", "dv", "dalpha", "dbeta", "dg", "df", "dh0", "ds0"};

struct Problem {
  BwdCase cs;
  gka_test::HostProblem prob;
  HostTensor q, k, v, alpha, beta, g, f, h0, s0, d_o, d_ht, d_st;
  std::vector<int32_t> cu32;
  std::vector<int64_t> cu64;
  DevBuf cu_dev;
  gka::ProblemShape dev_shape;
  gka_test::BackwardOutputs ref;  // float64 reference gradients
};

std::vector<double> normals(std::mt19937_64& rng, size_t n) {
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> x(n);
  for (double& e : x) e = nd(rng);
  return x;
}

gka::OperatorInputs inputs(const Problem& P, bool dev) {
  const auto& s = P.cs.spec;
  gka::OperatorInputs in;
  in.q = gka_test::tok(P.q, dev, s.T, s.Hq, s.D);
  in.k = gka_test::tok(P.k, dev, s.T, s.Hkv, s.D);
  in.v = gka_test::tok(P.v, dev, s.T, s.Hkv, s.D);
  in.alpha = gka_test::tok(P.alpha, dev, s.T, s.Hq, 1);
  in.beta = gka_test::tok(P.beta, dev, s.T, s.Hq, 1);
  in.g = gka_test::tok(P.g, dev, s.T, s.Hq, 1);
  in.f = gka_test::tok(P.f, dev, s.T, s.Hq, 1);
  in.h0 = gka_test::st(P.h0, dev, s.Hq, s.D);
  in.s0 = gka_test::st(P.s0, dev, s.Hq, s.D);
  return in;
}

gka::SolverOptions options_of(const BwdCase& c) {
  gka::SolverOptions o;
  o.num_iter = c.num_iter;
  o.l2norm_qk = o.fuse_beta = c.fused;
  return o;
}

void build(Problem& P, const BwdCase& c, uint64_t seed) {
  P.cs = c;
  P.prob = gka_test::random_problem(c.spec, seed);
  if (c.mutate) c.mutate(P.prob);
  const auto& pr = P.prob;
  const auto& s = c.spec;
  const int64_t N = s.num_states();
  gka_test::upload(P.q, c.fused ? pr.raw_q : pr.q, c.dtype);
  gka_test::upload(P.k, c.fused ? pr.raw_k : pr.k, c.dtype);
  gka_test::upload(P.v, c.fused ? pr.raw_v : pr.v, c.dtype);
  gka_test::upload(P.alpha, pr.alpha, c.dtype);
  if (c.fused) gka_test::upload(P.beta, pr.beta, c.dtype);
  gka_test::upload(P.g, pr.g, gka::DType::kFP32);
  gka_test::upload(P.f, pr.f, gka::DType::kFP32);
  gka_test::upload(P.h0, pr.h0, gka::DType::kFP32);
  gka_test::upload(P.s0, pr.s0, gka::DType::kFP32);
  std::mt19937_64 rng(seed * 7919 + 1);
  gka_test::upload(P.d_o, normals(rng, static_cast<size_t>(s.B * s.T * s.Hq * s.D)), c.dtype);
  if (c.d_final) {
    // incoming state gradients of the size a loss on H_T / S_T would give
    gka_test::upload(P.d_ht, normals(rng, static_cast<size_t>(N * s.Hq * s.D * s.D)), gka::DType::kFP32);
    gka_test::upload(P.d_st, normals(rng, static_cast<size_t>(N * s.Hq * s.D * s.D)), gka::DType::kFP32);
  }
  P.dev_shape = gka_test::shape_of(pr);
  gka::ProblemShape host_shape = P.dev_shape;
  if (!s.cu_seqlens.empty()) {
    P.cu64 = s.cu_seqlens;
    P.cu32.assign(P.cu64.begin(), P.cu64.end());
    const void* src = c.cu_int32 ? static_cast<const void*>(P.cu32.data()) : static_cast<const void*>(P.cu64.data());
    P.cu_dev.reset(P.cu64.size() * (c.cu_int32 ? 4 : 8));
    REQUIRE(P.cu_dev.p != nullptr);
    CUDA_OK(cudaMemcpy(P.cu_dev.p, src, P.cu_dev.bytes, cudaMemcpyHostToDevice));
    P.dev_shape.cu_seqlens.data = P.cu_dev.p;
    P.dev_shape.cu_seqlens.host_data = src;
    P.dev_shape.cu_seqlens.type = c.cu_int32 ? gka::IndexType::kInt32 : gka::IndexType::kInt64;
  }
  // float64 reference on the same rounded inputs; it recomputes x and nu itself
  gka_test::LossGradients lg;  // only for the output sizing of backward_args
  gka::BackwardArgs ra = gka_test::backward_args(pr, lg, P.ref, options_of(c), c.bp_lambda);
  ra.shape = host_shape;
  ra.in = inputs(P, false);
  ra.d_o = gka_test::tok(P.d_o, false, s.T, s.Hq, s.D);
  ra.d_ht = gka_test::st(P.d_ht, false, s.Hq, s.D);
  ra.d_st = gka_test::st(P.d_st, false, s.Hq, s.D);
  if (pr.alpha.empty()) ra.dalpha = gka::TokenTensor{};
  if (!c.fused) ra.dbeta = gka::TokenTensor{};
  if (pr.g.empty()) ra.dg = gka::TokenTensor{};
  if (pr.h0.empty()) ra.dh0 = gka::StateTensor{};
  if (pr.s0.empty()) ra.ds0 = gka::StateTensor{};
  const gka::Result r = gka::reference::backward<double>(ra);
  INFO(r.what());
  REQUIRE(r.ok());
}

struct DevGrads {
  DevBuf g[kNumGrads];
};

void alloc_grads(const Problem& P, DevGrads& d) {
  const auto& s = P.cs.spec;
  const size_t BT = static_cast<size_t>(s.B * s.T), N = static_cast<size_t>(s.num_states());
  const size_t es = gka::dtype_size(P.cs.dtype);
  d.g[0].reset(BT * s.Hq * s.D * es);
  d.g[1].reset(BT * s.Hkv * s.D * es);
  d.g[2].reset(BT * s.Hkv * s.D * es);
  if (!P.prob.alpha.empty()) d.g[3].reset(BT * s.Hq * es);
  if (P.cs.fused) d.g[4].reset(BT * s.Hq * es);
  if (!P.prob.g.empty()) d.g[5].reset(BT * s.Hq * 4);
  if (!P.prob.f.empty()) d.g[6].reset(BT * s.Hq * 4);
  if (!P.prob.h0.empty()) d.g[7].reset(N * s.Hq * s.D * s.D * 4);
  if (!P.prob.s0.empty()) d.g[8].reset(N * s.Hq * s.D * s.D * 4);
}

gka::BackwardArgs device_args(const Problem& P, DevGrads& d) {
  const auto& s = P.cs.spec;
  gka::BackwardArgs a;
  a.shape = P.dev_shape;
  a.in = inputs(P, true);
  a.options = options_of(P.cs);
  a.bp_lambda = P.cs.bp_lambda;
  a.scan_segments = P.cs.scan_segments;
  a.d_o = gka_test::tok(P.d_o, true, s.T, s.Hq, s.D);
  a.d_ht = gka_test::st(P.d_ht, true, s.Hq, s.D);
  a.d_st = gka_test::st(P.d_st, true, s.Hq, s.D);
  const gka::DType t = P.cs.dtype;
  a.dq = gka::TokenTensor::contiguous(d.g[0].p, t, s.T, s.Hq, s.D);
  a.dk = gka::TokenTensor::contiguous(d.g[1].p, t, s.T, s.Hkv, s.D);
  a.dv = gka::TokenTensor::contiguous(d.g[2].p, t, s.T, s.Hkv, s.D);
  if (d.g[3].p) a.dalpha = gka::TokenTensor::contiguous(d.g[3].p, t, s.T, s.Hq, 1);
  if (d.g[4].p) a.dbeta = gka::TokenTensor::contiguous(d.g[4].p, t, s.T, s.Hq, 1);
  if (d.g[5].p) a.dg = gka::TokenTensor::contiguous(d.g[5].p, gka::DType::kFP32, s.T, s.Hq, 1);
  if (d.g[6].p) a.df = gka::TokenTensor::contiguous(d.g[6].p, gka::DType::kFP32, s.T, s.Hq, 1);
  if (d.g[7].p) a.dh0 = gka::StateTensor::contiguous(d.g[7].p, gka::DType::kFP32, s.Hq, s.D);
  if (d.g[8].p) a.ds0 = gka::StateTensor::contiguous(d.g[8].p, gka::DType::kFP32, s.Hq, s.D);
  return a;
}

const std::vector<double>& ref_grad(const Problem& P, int i) {
  const gka_test::BackwardOutputs& r = P.ref;
  const std::vector<double>* all[kNumGrads] = {&r.dq, &r.dk, &r.dv, &r.dalpha, &r.dbeta, &r.dg, &r.df, &r.dh0, &r.ds0};
  return *all[i];
}

gka::DType grad_dtype(const Problem& P, int i) { return i <= 4 ? P.cs.dtype : gka::DType::kFP32; }

using Snapshot = std::vector<std::vector<uint8_t>>;

Snapshot download_all(const DevGrads& d) {
  Snapshot s(kNumGrads);
  for (int i = 0; i < kNumGrads; ++i)
    if (d.g[i].p) s[i] = gka_test::download(d.g[i]);
  return s;
}

// The forward that saves what the backward reads: x (fp32), nu, and its workspace (chunk states).
struct SavedForward {
  DevBuf o, x, nu, ws;
  size_t ws_bytes = 0;
};

void run_forward(const Problem& P, SavedForward& f, gka::DType state_dtype, cudaStream_t stream) {
  const auto& s = P.cs.spec;
  const size_t tokens = static_cast<size_t>(s.B * s.T * s.Hq);
  gka::ForwardArgs a;
  a.shape = P.dev_shape;
  a.in = inputs(P, true);
  a.options = options_of(P.cs);
  a.chunk_state_dtype = state_dtype;
  f.o.reset(tokens * s.D * gka::dtype_size(P.cs.dtype));
  f.x.reset(tokens * s.D * 4);
  f.nu.reset(tokens * 4);
  a.o = gka::TokenTensor::contiguous(f.o.p, P.cs.dtype, s.T, s.Hq, s.D);
  a.x = gka::TokenTensor::contiguous(f.x.p, gka::DType::kFP32, s.T, s.Hq, s.D);
  a.nu = gka::TokenTensor::contiguous(f.nu.p, gka::DType::kFP32, s.T, s.Hq, 1);
  f.ws_bytes = gka::forward_workspace_size(a);
  f.ws.reset(f.ws_bytes);
  const gka::Result r = gka::forward(a, f.ws.p, f.ws_bytes, stream);
  INFO(r.what());
  REQUIRE(r.ok());
}

gka::BackwardArgs with_mode(gka::BackwardArgs a, const Problem& P, const SavedForward& f, Mode m) {
  const auto& s = P.cs.spec;
  if (m != Mode::kRecomputeX) {
    a.x = gka::TokenTensor::contiguous(f.x.p, gka::DType::kFP32, s.T, s.Hq, s.D);
    a.nu = gka::TokenTensor::contiguous(f.nu.p, gka::DType::kFP32, s.T, s.Hq, 1);
  }
  if (m == Mode::kSavedStates) {
    a.forward_workspace = f.ws.p;
    a.chunk_state_dtype = P.cs.state_dtype;
  }
  return a;
}

Snapshot run_backward(const gka::BackwardArgs& a, DevGrads& d, DevBuf& ws, cudaStream_t stream) {
  const size_t bytes = gka::backward_workspace_size(a);
  if (ws.bytes < bytes) ws.reset(bytes);
  REQUIRE((bytes == 0 || ws.p != nullptr));
  for (DevBuf& b : d.g) gka_test::poison(b, stream);
  const gka::Result r = gka::backward(a, ws.p, bytes, stream);
  INFO(r.what());
  REQUIRE(r.ok());
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaGetLastError());
  return download_all(d);
}

std::vector<double> errors_of(const Problem& P, const Snapshot& s) {
  std::vector<double> e(kNumGrads, -1.0);  // -1: gradient not produced in this configuration
  for (int i = 0; i < kNumGrads; ++i)
    if (!s[i].empty()) e[i] = gka_test::rel_error(gka_test::to_double(s[i], grad_dtype(P, i)), ref_grad(P, i));
  return e;
}

void print_errors(const std::string& label, const BwdCase& c, const std::vector<double>& e) {
  std::printf("ERR| %-46s | %-4s |", label.c_str(), gka::dtype_name(c.dtype));
  for (int i = 0; i < kNumGrads; ++i) {
    if (e[i] < 0) std::printf(" %s -       |", kGradNames[i]);
    else std::printf(" %s %.2e |", kGradNames[i], e[i]);
  }
  std::printf("\n");
  std::fflush(stdout);
}

std::vector<double> run_case(const BwdCase& c, uint64_t seed, bool graph_check, bool modes) {
  Problem P;
  build(P, c, seed);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  SavedForward fwd;
  run_forward(P, fwd, c.state_dtype, stream);
  DevGrads d;
  alloc_grads(P, d);
  DevBuf ws;
  const gka::BackwardArgs base = device_args(P, d);
  {
    const gka::Result ci = gka::can_implement(base, 0);
    INFO(ci.what());
    REQUIRE(ci.ok());
  }
  const Mode first_mode = c.state_dtype == gka::DType::kBF16 ? Mode::kSavedStates : Mode::kSavedX;
  const gka::BackwardArgs a = with_mode(base, P, fwd, first_mode);
  const Snapshot first = run_backward(a, d, ws, stream);
  const std::vector<double> e = errors_of(P, first);
  print_errors(c.name + (c.bp_lambda ? "" : " [bp_lambda off]") +
                   (c.state_dtype == gka::DType::kBF16 ? " [saved bf16 states]" : ""),
               c, e);
  for (int i = 0; i < kNumGrads; ++i) {
    const double tol = i == 1 ? c.tol_dk : c.tol;
    INFO(kGradNames[i] << " error " << e[i] << " > " << tol);
    CHECK(e[i] <= tol);
  }
  // determinism: a second run (freshly poisoned) is bitwise equal
  CHECK(run_backward(a, d, ws, stream) == first);
  // two kernel chains on two streams (BackwardArgs::overlap_stream): bitwise the one-stream result
  cudaStream_t side;
  CUDA_OK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  gka::BackwardArgs ao = a;
  ao.overlap_stream = side;
  CHECK(run_backward(ao, d, ws, stream) == first);
  if (modes) {
    // saved chunk states (fp32) read the same values the scan recomputes: bitwise equal
    CHECK(run_backward(with_mode(base, P, fwd, Mode::kSavedStates), d, ws, stream) == first);
    // recomputing x and nu runs the same forward kernels: bitwise equal to the saved fp32 x
    CHECK(run_backward(with_mode(base, P, fwd, Mode::kRecomputeX), d, ws, stream) == first);
  }
  if (graph_check) {
    const gka::BackwardArgs* const both[] = {&a, &ao};  // one stream, and the fork / join of two
    for (const gka::BackwardArgs* g : both) {
      const size_t bytes = gka::backward_workspace_size(*g);
      for (DevBuf& b : d.g) gka_test::poison(b, stream);
      CUDA_OK(cudaStreamSynchronize(stream));
      gka_test::capture_and_replay(stream, [&] { return gka::backward(*g, ws.p, bytes, stream); });
      const Snapshot third = download_all(d);
      CHECK(third == first);
      std::printf("     graph capture + replay%s: %s\n", g == &ao ? " (two streams)" : "",
                  third == first ? "bitwise equal" : "DIFFERS");
    }
  }
  CUDA_OK(cudaStreamDestroy(side));
  CUDA_OK(cudaStreamDestroy(stream));
  return e;
}

// One SECTION per case with seeds seed, seed + 1, ...; graph capture for the varlen bf16 int32 cases.
void run_sections(const std::vector<BwdCase>& cases, uint64_t seed) {
  for (const BwdCase& c : cases) {
    SECTION(c.name + " " + gka::dtype_name(c.dtype)) {
      run_case(c, seed, !c.spec.cu_seqlens.empty() && c.cu_int32 && c.dtype == gka::DType::kBF16, false);
    }
    ++seed;
  }
}

gka_test::ProblemSpec spec(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D) {
  return gka_test::problem_spec(B, T, Hq, Hkv, D);
}

// Tolerances: relative L2 error of each gradient against the float64 reference, which solves with
// float64 Chebyshev iterates and exact inputs of the same rounding. In brackets the largest value
// measured over the cases that use the bound (H200, ea7f494, scripts/gpu_validate.sh); every bound
// keeps at least 2x over it.
//  - bf16 inputs: 3e-2 [1.2e-2, dh0 with saved bf16 states]. The forward's x and the adjoint's z
//    both come from bf16-operand solves (a few 1e-3 each, docs/gpu-forward.md) and every gradient
//    passes through both.
//  - bf16 dk: 6e-2 [2.6e-2]. dk carries the lambda term w H k with w = 2a (z.x)/nu. x is large
//    (~|q|/lambda) in the directions the keys do not span, while dq~ = s S do, and hence z, has
//    (almost) no component there: z.x sums the bf16 solve's rounding noise in z times that large x.
//    The shorter the memory, the larger the share: a single token (T = 1) has dq~ parallel to k,
//    z.x is then mostly noise, and dk reaches 0.4 [0.42]. That case gets its own bound of 1.0,
//    which still catches a wrong formula (errors >= 1), and is documented in docs/gpu-backward.md.
//  - fp16 / fp32 inputs: hi + lo operands everywhere: 1e-3 [fp16 2.1e-4, fp32 5.0e-5]. A single
//    token is the forward's one-token-memory case (g = -1e4 there: o 6.7e-4 with fp32 inputs):
//    k.q~ cancels |x| ~ 1/(a|k|^2) by ~1/a, so the 2^-16 operand split shows as ~1e-3; 3e-3 for
//    that case [fp32 1.0e-3].
BwdCase mk(const std::string& name, gka_test::ProblemSpec s, gka::DType t) {
  BwdCase c;
  c.name = name;
  c.spec = s;
  c.dtype = t;
  c.tol = t == gka::DType::kBF16 ? 3e-2 : 1e-3;
  c.tol_dk = t == gka::DType::kBF16 ? 6e-2 : 1e-3;
  return c;
}

}  // namespace

TEST_CASE("backward: dense batches, dtypes, head dims, tails, final-state gradients", "[gpu][backward]") {
  using gka::DType;
  std::vector<BwdCase> cases;
  {
    auto s = spec(2, 300, 2, 2, 128); s.separate_f = true; s.h0 = s.s0 = true;
    cases.push_back(mk("B2 T300 H2 D128 f!=g h0 s0 dHT dST", s, DType::kBF16));
    BwdCase c = mk("B2 T300 H2 D128 f!=g h0 s0 dHT dST", s, DType::kBF16);
    c.bp_lambda = false;
    cases.push_back(c);
    cases.push_back(mk("B2 T300 H2 D128 f!=g h0 s0 dHT dST", s, DType::kFP32));
  }
  {
    auto s = spec(2, 200, 2, 2, 64); s.h0 = s.s0 = true;
    cases.push_back(mk("B2 T200 H2 D64 f=g h0 s0 dHT dST", s, DType::kBF16));
    cases.push_back(mk("B2 T200 H2 D64 f=g h0 s0 dHT dST", s, DType::kFP16));
  }
  {
    BwdCase c = mk("B1 T1 H2 D128", spec(1, 1, 2, 2, 128), DType::kBF16);
    c.d_final = false;
    c.tol_dk = 1.0;  // single token: z.x is bf16 rounding noise times |x| ~ |q|/lambda (see mk())
    cases.push_back(c);
    c = mk("B1 T1 H2 D128", spec(1, 1, 2, 2, 128), DType::kFP32);
    c.d_final = false;
    c.tol = c.tol_dk = 3e-3;  // single token: the one-token cancellation of the split operands (see mk())
    cases.push_back(c);
  }
  {
    auto s = spec(1, 37, 2, 2, 128); s.h0 = s.s0 = true;
    cases.push_back(mk("B1 T37 H2 D128 (T<C) h0 s0", s, DType::kBF16));
  }
  {
    auto s = spec(1, 200, 2, 2, 128); s.g = false; s.alpha = false;
    BwdCase c = mk("B1 T200 H2 D128 no gates, no alpha", s, DType::kBF16);
    c.d_final = false;
    cases.push_back(c);
  }
  uint64_t seed = 500;
  for (const BwdCase& c : cases) {
    SECTION(c.name + " " + gka::dtype_name(c.dtype) + (c.bp_lambda ? "" : " nobpl")) {
      run_case(c, seed, c.spec.T == 300 && c.dtype == DType::kBF16, c.spec.T == 300);
    }
    ++seed;
  }
}

TEST_CASE("backward: varlen, GQA, iteration counts, saved bf16 states", "[gpu][backward]") {
  using gka::DType;
  std::vector<BwdCase> cases;
  {
    auto s = spec(1, 333, 2, 2, 128); s.cu_seqlens = {0, 5, 69, 200, 333}; s.h0 = s.s0 = true; s.separate_f = true;
    cases.push_back(mk("varlen int32 [5,64,131,133] D128 h0 s0", s, DType::kBF16));
    cases.push_back(mk("varlen int32 [5,64,131,133] D128 h0 s0", s, DType::kFP32));
  }
  {
    auto s = spec(1, 257, 4, 1, 64); s.cu_seqlens = {0, 1, 130, 257}; s.h0 = s.s0 = true;
    BwdCase c = mk("varlen int64 [1,129,127] GQA 4/1 D64", s, DType::kBF16);
    c.cu_int32 = false;
    cases.push_back(c);
  }
  {
    auto s = spec(2, 200, 4, 2, 128); s.h0 = true;
    cases.push_back(mk("GQA 4/2 B2 T200 D128 h0 only", s, DType::kBF16));
  }
  for (int r : {0, 5}) {
    auto s = spec(1, 130, 2, 2, 128); s.h0 = s.s0 = true;
    BwdCase c = mk("r=" + std::to_string(r) + " B1 T130 D128", s, DType::kBF16);
    c.num_iter = r;
    cases.push_back(c);
  }
  {
    auto s = spec(2, 300, 2, 2, 128); s.separate_f = true; s.h0 = s.s0 = true;
    BwdCase c = mk("B2 T300 H2 D128 f!=g h0 s0", s, DType::kBF16);
    c.state_dtype = DType::kBF16;
    cases.push_back(c);
  }
  {
    auto s = spec(1, 200, 2, 2, 128); s.h0 = s.s0 = true;
    BwdCase c = mk("fused l2norm+beta B1 T200 D128", s, DType::kBF16);
    c.fused = true;
    cases.push_back(c);
    c = mk("fused l2norm+beta B1 T200 D128", s, DType::kFP32);
    c.fused = true;
    cases.push_back(c);
    auto s2 = spec(1, 257, 4, 1, 64); s2.cu_seqlens = {0, 1, 130, 257}; s2.h0 = s2.s0 = true;
    c = mk("fused l2norm+beta varlen GQA 4/1 D64", s2, DType::kBF16);
    c.fused = true;
    cases.push_back(c);
  }
  {
    auto s = spec(1, 2048, 2, 2, 128);
    BwdCase c = mk("B1 T2048 H2 D128 (issue scale)", s, DType::kBF16);
    c.d_final = false;
    cases.push_back(c);
  }
  run_sections(cases, 600);
}

// Segmented reverse scans (BackwardArgs::scan_segments, kernels/backward_params.cuh: ScanSegments):
// runs of chunks scanned in parallel, the carries added by the GLA / cov kernels. The same sums in
// another order, so the same tolerances; runs of unequal length, runs past a short sequence's end
// (varlen), the incoming dH_T / dS_T entering the last run only, GQA, both head dims, bf16 chunk
// states (the carry's sum rounded to bf16 once more), and (in run_case) determinism, two streams
// and graph capture.
TEST_CASE("backward: segmented reverse scans", "[gpu][backward][segments]") {
  using gka::DType;
  std::vector<BwdCase> cases;
  {
    auto s = spec(2, 1000, 2, 2, 128); s.separate_f = true; s.h0 = s.s0 = true;  // 16 chunks: runs of 6, 6, 4
    for (DType t : {DType::kBF16, DType::kFP32}) {
      BwdCase c = mk("B2 T1000 H2 D128 f!=g h0 s0 dHT dST, 3 runs", s, t);
      c.scan_segments = 3;
      cases.push_back(c);
    }
    BwdCase c = mk("B2 T1000 H2 D128 f!=g h0 s0 dHT dST, 5 runs", s, DType::kBF16);
    c.scan_segments = 5;
    c.state_dtype = DType::kBF16;
    cases.push_back(c);
    c = mk("B2 T1000 H2 D128 no bp_lambda, 16 runs", s, DType::kFP32);
    c.scan_segments = 16;  // one chunk per run
    c.bp_lambda = false;
    cases.push_back(c);
  }
  {
    // chunks per sequence 1, 1, 3, 8: with 4 runs, runs of 1, 1, 1, 2 chunks and empty ones
    auto s = spec(1, 700, 2, 2, 128); s.cu_seqlens = {0, 5, 69, 200, 700}; s.h0 = s.s0 = true;
    BwdCase c = mk("varlen [5,64,131,500] D128 h0 s0, 4 runs", s, DType::kBF16);
    c.scan_segments = 4;
    cases.push_back(c);
    c = mk("varlen [5,64,131,500] D128 h0 s0, 4 runs", s, DType::kFP32);
    c.scan_segments = 4;
    cases.push_back(c);
  }
  {
    auto s = spec(2, 600, 4, 2, 64); s.h0 = s.s0 = true;
    BwdCase c = mk("GQA 4/2 B2 T600 D64 h0 s0, 2 runs", s, DType::kBF16);
    c.scan_segments = 2;
    cases.push_back(c);
  }
  {
    // the automatic choice segments a long single sequence (B1 T4096 H2: 2 runs of 32 chunks)
    auto s = spec(1, 4096, 2, 2, 128);
    BwdCase c = mk("B1 T4096 H2 D128, automatic runs", s, DType::kBF16);
    c.d_final = false;
    cases.push_back(c);
  }
  run_sections(cases, 700);
}

TEST_CASE("backward: bad arguments return the right status", "[gpu][backward][args]") {
  Problem P;
  BwdCase c = mk("args", spec(1, 70, 2, 2, 128), gka::DType::kBF16);
  c.d_final = false;
  build(P, c, 5);
  DevGrads d;
  alloc_grads(P, d);
  cudaStream_t stream = nullptr;
  SavedForward fwd;
  run_forward(P, fwd, gka::DType::kFP32, stream);
  const gka::BackwardArgs good = with_mode(device_args(P, d), P, fwd, Mode::kSavedX);
  const size_t bytes = gka::backward_workspace_size(good);
  DevBuf ws(bytes);
  REQUIRE(gka::backward(good, ws.p, bytes, stream).ok());
  CUDA_OK(cudaDeviceSynchronize());
  CHECK(gka::backward(good, ws.p, bytes - 1, stream).status == gka::Status::kErrorWorkspaceTooSmall);
  CHECK(gka::backward(good, nullptr, bytes, stream).status == gka::Status::kErrorNullPointer);
  {
    gka::BackwardArgs a = good; a.d_o.data = nullptr;
    CHECK(gka::backward(a, ws.p, bytes, stream).status == gka::Status::kErrorNullPointer);
  }
  {
    gka::BackwardArgs a = good; a.options.chunk_size = 32;
    CHECK(gka::backward(a, ws.p, bytes, stream).status == gka::Status::kErrorNotSupported);
  }
  {
    gka::BackwardArgs a = good; a.options.fuse_beta = true;  // beta and dbeta absent
    CHECK(gka::backward(a, ws.p, bytes, stream).status != gka::Status::kSuccess);
  }
  {
    gka::BackwardArgs a = good; a.shape.head_dim = 96;
    CHECK(gka::backward(a, ws.p, bytes, stream).status == gka::Status::kErrorUnsupportedHeadDim);
  }
  {
    gka::BackwardArgs a = good; a.dalpha = gka::TokenTensor{};  // alpha given: dalpha required
    CHECK(gka::backward(a, ws.p, bytes, stream).status != gka::Status::kSuccess);
  }
  {
    gka::BackwardArgs a = good; a.scan_segments = -1;
    CHECK(gka::backward(a, ws.p, bytes, stream).status == gka::Status::kErrorInvalidShape);
  }
  {
    // segmented scans need room for the run totals: a larger workspace, and the call says so
    gka::BackwardArgs a = good; a.scan_segments = 2;
    CHECK(gka::backward_workspace_size(a) > bytes);
    CHECK(gka::backward(a, ws.p, bytes, stream).status == gka::Status::kErrorWorkspaceTooSmall);
  }
  // the recompute modes need more workspace, and say so
  gka::BackwardArgs rx = good;
  rx.x = gka::TokenTensor{};
  CHECK(gka::backward_workspace_size(rx) > bytes);
  gka::BackwardArgs saved = good;
  saved.forward_workspace = fwd.ws.p;
  CHECK(gka::backward_workspace_size(saved) < bytes);
  CUDA_OK(cudaGetLastError());
}
