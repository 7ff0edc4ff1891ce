// tests/gpu/test_decode.cu: gka::decode against the float64 reference (gka::reference::decode on
// the same rounded inputs and pool), and continuity: a GPU forward over T tokens into the pool, then
// k GPU decode calls of m tokens, equals one GPU forward (and the float64 reference) over T + k m.
// Fresh realistic random inputs and pool states (tests/common/random_inputs.h); every output and
// the pool's untouched slots are checked; outputs are NaN-poisoned before each launch; two runs are
// bitwise equal; a CUDA-graph capture + replay reproduces them; bad arguments give the right Status.
// Each configuration prints one "ERR|" line with the relative L2 errors.
#include "common/catch.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "common/compare.h"
#include "common/device.h"
#include "common/random_inputs.h"
#include "gka/api/decode.cuh"
#include "gka/api/forward.cuh"
#include "gka/gka.h"
#include "gka/numeric/host_convert.h"
#include "gka/reference/reference.h"

namespace {

using gka_test::DevBuf;
using gka_test::RoundedTensor;
using gka_test::download;
using gka_test::poison;
using gka_test::to_bytes;
using gka_test::to_double;
using gka_test::tok;
using gka_test::upload;

// Relative L2 error where the reference is finite; where it is NaN (never written: skipped
// sequences) the GPU must have left its NaN poison too, otherwise the error is infinite.
double masked_error(const std::vector<double>& gpu, const std::vector<double>& ref) {
  if (gpu.size() != ref.size()) return INFINITY;
  double diff = 0, nrm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(ref[i])) {
      if (!std::isnan(gpu[i])) return INFINITY;
      continue;
    }
    if (!std::isfinite(gpu[i])) return INFINITY;
    diff += (gpu[i] - ref[i]) * (gpu[i] - ref[i]);
    nrm += ref[i] * ref[i];
  }
  return nrm > 0 ? std::sqrt(diff / nrm) : std::sqrt(diff);
}

gka::StateTensor state(void* p, gka::DType t, int64_t H, int64_t D) { return gka::StateTensor::contiguous(p, t, H, D); }

struct Case {
  std::string name;
  int64_t N = 3, m = 1, Hq = 2, Hkv = 2, D = 128;
  std::vector<int64_t> counts;    // non-empty: varlen with these per-sequence token counts
  gka::DType dtype = gka::DType::kBF16;
  gka::DType s_dtype = gka::DType::kFP32;  // pool S
  int num_iter = 30;
  bool fused = false, alpha = true, separate_f = false, g = true;
  bool pad = false;               // sequence 1 reads the pad slot (skipped)
  bool separate_write = false;    // write slots differ from read slots
  bool zero_start = false;        // has_initial_state[0] = 0
  bool inter = false;             // per-token states requested
  int min_blocks = 0;             // detail::decode_impl's register budget (0 = auto)
  int split = 0;                  // detail::decode_impl's cluster split (0 = auto: on for these small grids at D = 128)
  // tolerances, set by mk() from the dtypes
  double tol_o = 1e-2, tol_h = 1e-5, tol_s = 1e-5;
};

// Tolerances (relative L2 against the float64 reference on the same rounded inputs and pool).
// Decode computes everything in fp32 (no bf16 operands, unlike the chunked forward), so the
// arithmetic contributes ~1e-6 - 1e-5 (30 fp32 Chebyshev steps at condition number <= 51 lose about
// one decimal over fp32's 6e-8); what dominates is the rounding of the stored outputs:
//  - o: stored in q's dtype: bf16 (2^-9 relative rounding) 1e-2, fp16 (2^-12) 1e-3, fp32 1e-4.
//  - H (pool and per-token): fp32 accumulation of exactly representable products: 1e-5.
//  - S in the pool: fp32 1e-5; a bf16 pool rounds S once per call (2^-9 relative, independent per
//    element, so ~2^-9/sqrt(3) in L2): 5e-3.
Case mk(const std::string& name, gka::DType t) {
  Case c;
  c.name = name;
  c.dtype = t;
  c.tol_o = t == gka::DType::kBF16 ? 1e-2 : t == gka::DType::kFP16 ? 1e-3 : 1e-4;
  return c;
}

struct Errors {
  double o = 0, h = 0, s = 0, ih = 0, is = 0;
};

Errors run_case(const Case& c, uint64_t seed, bool graph_check) {
  using gka::DType;
  const bool varlen = !c.counts.empty();
  const int64_t N = varlen ? static_cast<int64_t>(c.counts.size()) : c.N;
  gka_test::ProblemSpec spec;
  spec.Hq = c.Hq;
  spec.Hkv = c.Hkv;
  spec.D = c.D;
  spec.alpha = c.alpha;
  spec.g = c.g;
  spec.separate_f = c.separate_f;
  if (varlen) {
    spec.B = 1;
    spec.cu_seqlens = {0};
    for (int64_t n : c.counts) spec.cu_seqlens.push_back(spec.cu_seqlens.back() + n);
    spec.T = spec.cu_seqlens.back();
  } else {
    spec.B = N;
    spec.T = c.m;
  }
  const int64_t B = spec.B, T = spec.T, Hq = c.Hq, Hkv = c.Hkv, D = c.D;
  const gka_test::HostProblem pr = gka_test::random_problem(spec, seed);

  // pool: 2N + 1 slots of realistic states; sequence n reads 2n (+ writes 2n + 1 when separate)
  const int64_t slots = 2 * N + 1;
  std::vector<double> h_init, s_init;
  std::mt19937_64 rng(seed * 31 + 7);
  gka_test::random_prefix_states(rng, slots, Hq, D, 2 * D, &h_init, &s_init);
  RoundedTensor q, k, v, alpha, g, f, beta, pool_h, pool_s;
  upload(q, c.fused ? pr.raw_q : pr.q, c.dtype);
  upload(k, c.fused ? pr.raw_k : pr.k, c.dtype);
  upload(v, c.fused ? pr.raw_v : pr.v, c.dtype);
  upload(alpha, pr.alpha, c.dtype);
  upload(g, pr.g, DType::kFP32);
  upload(f, pr.f, DType::kFP32);
  if (c.fused) upload(beta, pr.beta, c.dtype);
  upload(pool_h, h_init, DType::kFP32);
  upload(pool_s, s_init, c.s_dtype);
  std::vector<int32_t> rd(N), wr(N);
  for (int64_t n = 0; n < N; ++n) {
    rd[n] = static_cast<int32_t>(2 * n);
    wr[n] = static_cast<int32_t>(c.separate_write ? 2 * n + 1 : 2 * n);
  }
  if (c.pad) rd[1] = wr[1] = -1;
  std::vector<uint8_t> has(N, 1);
  if (c.zero_start) has[0] = 0;
  DevBuf rd_dev(N * 4), wr_dev(N * 4), has_dev(N), cu_dev;
  CUDA_OK(cudaMemcpy(rd_dev.p, rd.data(), N * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(wr_dev.p, wr.data(), N * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(has_dev.p, has.data(), N, cudaMemcpyHostToDevice));
  std::vector<int32_t> cu32(spec.cu_seqlens.begin(), spec.cu_seqlens.end());
  if (varlen) {
    cu_dev.reset(cu32.size() * 4);
    CUDA_OK(cudaMemcpy(cu_dev.p, cu32.data(), cu32.size() * 4, cudaMemcpyHostToDevice));
  }

  gka::SolverOptions opt;
  opt.num_iter = c.num_iter;
  opt.l2norm_qk = opt.fuse_beta = c.fused;
  const size_t state_elems = static_cast<size_t>(B * T * Hq * D * D);
  // ---- reference (float64) on the rounded inputs and pool
  std::vector<double> ref_o(static_cast<size_t>(B * T * Hq * D), NAN), ref_h = pool_h.rounded, ref_s = pool_s.rounded;
  std::vector<double> ref_ih(c.inter ? state_elems : 0, NAN), ref_is(c.inter ? state_elems : 0, NAN);
  gka::DecodeArgs a;
  a.shape = gka_test::shape_of(pr);
  a.options = opt;
  gka::DecodeArgs r = a;  // host views
  r.in.q = tok(q, false, T, Hq, D);
  r.in.k = tok(k, false, T, Hkv, D);
  r.in.v = tok(v, false, T, Hkv, D);
  r.in.alpha = tok(alpha, false, T, Hq, 1);
  r.in.g = tok(g, false, T, Hq, 1);
  r.in.f = tok(f, false, T, Hq, 1);
  r.in.beta = tok(beta, false, T, Hq, 1);
  r.pool.h = state(ref_h.data(), DType::kFP64, Hq, D);
  r.pool.s = state(ref_s.data(), DType::kFP64, Hq, D);
  r.pool.num_slots = slots;
  r.pool.read_slots = rd.data();
  r.pool.write_slots = c.separate_write ? wr.data() : nullptr;
  r.pool.has_initial_state = has.data();
  r.o = gka::TokenTensor::contiguous(ref_o.data(), DType::kFP64, T, Hq, D);
  if (c.inter) {
    r.inter_h = state(ref_ih.data(), DType::kFP64, Hq, D);
    r.inter_s = state(ref_is.data(), DType::kFP64, Hq, D);
  }
  {
    const gka::Result rr = gka::reference::decode<double>(r);
    INFO(rr.what());
    REQUIRE(rr.ok());
  }
  // ---- GPU
  a.in.q = tok(q, true, T, Hq, D);
  a.in.k = tok(k, true, T, Hkv, D);
  a.in.v = tok(v, true, T, Hkv, D);
  a.in.alpha = tok(alpha, true, T, Hq, 1);
  a.in.g = tok(g, true, T, Hq, 1);
  a.in.f = tok(f, true, T, Hq, 1);
  a.in.beta = tok(beta, true, T, Hq, 1);
  if (varlen) {
    a.shape.cu_seqlens.data = cu_dev.p;
    a.shape.cu_seqlens.host_data = cu32.data();
    a.shape.cu_seqlens.type = gka::IndexType::kInt32;
  }
  DevBuf o_dev(ref_o.size() * gka::dtype_size(c.dtype)), ih_dev(c.inter ? state_elems * 4 : 0),
      is_dev(c.inter ? state_elems * 4 : 0);
  a.pool.h = state(pool_h.dev.p, DType::kFP32, Hq, D);
  a.pool.s = state(pool_s.dev.p, c.s_dtype, Hq, D);
  a.pool.num_slots = slots;
  a.pool.read_slots = rd_dev.p;
  a.pool.write_slots = c.separate_write ? wr_dev.p : nullptr;
  a.pool.host_read_slots = rd.data();
  a.pool.host_write_slots = c.separate_write ? wr.data() : nullptr;
  a.pool.has_initial_state = static_cast<const uint8_t*>(has_dev.p);
  a.o = gka::TokenTensor::contiguous(o_dev.p, c.dtype, T, Hq, D);
  if (c.inter) {
    a.inter_h = state(ih_dev.p, DType::kFP32, Hq, D);
    a.inter_s = state(is_dev.p, DType::kFP32, Hq, D);
  }
  const std::vector<uint8_t> h0_bytes = to_bytes(h_init, DType::kFP32), s0_bytes = to_bytes(s_init, c.s_dtype);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  auto reset = [&]() {  // pool back to its initial contents, outputs poisoned
    CUDA_OK(cudaMemcpyAsync(pool_h.dev.p, h0_bytes.data(), h0_bytes.size(), cudaMemcpyHostToDevice, stream));
    CUDA_OK(cudaMemcpyAsync(pool_s.dev.p, s0_bytes.data(), s0_bytes.size(), cudaMemcpyHostToDevice, stream));
    poison(o_dev, stream);
    if (c.inter) {
      poison(ih_dev, stream);
      poison(is_dev, stream);
    }
    CUDA_OK(cudaStreamSynchronize(stream));
  };
  auto results = [&]() {
    std::vector<std::vector<uint8_t>> out = {download(o_dev), download(pool_h.dev), download(pool_s.dev)};
    if (c.inter) {
      out.push_back(download(ih_dev));
      out.push_back(download(is_dev));
    }
    return out;
  };
  reset();
  gka::Result res = gka::detail::decode_impl(a, stream, c.min_blocks, c.split);
  INFO(c.name << ": " << res.what());
  REQUIRE(res.ok());
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaGetLastError());
  const auto first = results();
  Errors e;
  e.o = masked_error(to_double(first[0], c.dtype), ref_o);
  e.h = masked_error(to_double(first[1], DType::kFP32), ref_h);
  e.s = masked_error(to_double(first[2], c.s_dtype), ref_s);
  if (c.inter) {
    e.ih = masked_error(to_double(first[3], DType::kFP32), ref_ih);
    e.is = masked_error(to_double(first[4], DType::kFP32), ref_is);
  }
  std::printf("ERR| decode %-46s | %-4s | o %.3e | pool H %.3e | pool S %.3e | inter H %.3e | inter S %.3e\n",
              (c.name + (c.s_dtype == DType::kBF16 ? " [bf16 S pool]" : "")).c_str(), gka::dtype_name(c.dtype), e.o,
              e.h, e.s, e.ih, e.is);
  std::fflush(stdout);
  CHECK(e.o <= c.tol_o);
  CHECK(e.h <= c.tol_h);
  CHECK(e.s <= (c.s_dtype == DType::kBF16 ? 5e-3 : c.tol_s));
  CHECK(e.ih <= c.tol_h);
  CHECK(e.is <= c.tol_s);
  if (c.pad) {  // the skipped sequence's slot is untouched, bitwise
    const size_t hd = static_cast<size_t>(Hq * D * D);
    const size_t slot_unused = static_cast<size_t>(2 * 1);  // what sequence 1 would have read
    CHECK(std::memcmp(first[1].data() + slot_unused * hd * 4, h0_bytes.data() + slot_unused * hd * 4, hd * 4) == 0);
  }
  // determinism
  reset();
  REQUIRE(gka::detail::decode_impl(a, stream, c.min_blocks, c.split).ok());
  CUDA_OK(cudaStreamSynchronize(stream));
  CHECK(results() == first);
  if (c.D == 128) {  // the other organisation (split into a solver and a state CTA, or not): bitwise the same
    reset();
    REQUIRE(gka::detail::decode_impl(a, stream, c.min_blocks, c.split == -1 ? 1 : -1).ok());
    CUDA_OK(cudaStreamSynchronize(stream));
    const bool same = results() == first;
    CHECK(same);
    std::printf("     %s: %s\n", c.split == -1 ? "split" : "not split", same ? "bitwise equal" : "DIFFERS");
  }
  if (graph_check) {
    reset();
    gka_test::capture_and_replay(stream, [&] { return gka::detail::decode_impl(a, stream, c.min_blocks, c.split); });
    const bool same = results() == first;
    CHECK(same);
    std::printf("     graph capture + replay: %s\n", same ? "bitwise equal" : "DIFFERS");
  }
  CUDA_OK(cudaStreamDestroy(stream));
  return e;
}

}  // namespace

TEST_CASE("decode: against the float64 reference", "[gpu][decode]") {
  using gka::DType;
  std::vector<Case> cases;
  for (DType t : {DType::kBF16, DType::kFP16, DType::kFP32}) {
    Case c = mk("N3 m1 H2 D128", t);
    cases.push_back(c);
    c = mk("N3 m4 H2 D128 f!=g inter", t);
    c.m = 4;
    c.separate_f = true;
    c.inter = true;
    cases.push_back(c);
  }
  {
    Case c = mk("N2 m1 H2 D64", DType::kBF16);
    c.N = 2;
    c.D = 64;
    cases.push_back(c);
    c = mk("N2 m3 H2 D64 inter", DType::kFP32);
    c.N = 2;
    c.m = 3;
    c.D = 64;
    c.inter = true;
    cases.push_back(c);
  }
  {
    Case c = mk("varlen [1,4,0,2] pad seq1 separate write", DType::kBF16);
    c.counts = {1, 4, 0, 2};
    c.pad = true;
    c.separate_write = true;
    c.inter = true;
    cases.push_back(c);
    c = mk("varlen [3,1,2] zero start seq0", DType::kFP32);
    c.counts = {3, 1, 2};
    c.zero_start = true;
    cases.push_back(c);
  }
  {
    Case c = mk("N4 m2 GQA 4/1 D128 fused l2norm+beta", DType::kBF16);
    c.N = 4;
    c.m = 2;
    c.Hq = 4;
    c.Hkv = 1;
    c.fused = true;
    cases.push_back(c);
    c.dtype = DType::kFP32;
    c.tol_o = 1e-4;
    cases.push_back(c);
  }
  {
    Case c = mk("N3 m2 no alpha no gates", DType::kBF16);
    c.m = 2;
    c.alpha = false;
    c.g = false;
    cases.push_back(c);
  }
  for (int r : {0, 1, 5, 70}) {  // 70: past the kernel's 64-entry omega table
    Case c = mk("N3 m2 r=" + std::to_string(r), DType::kFP32);
    c.m = 2;
    c.num_iter = r;
    cases.push_back(c);
  }
  {
    Case c = mk("N3 m1", DType::kBF16);
    c.s_dtype = DType::kBF16;
    cases.push_back(c);
    c = mk("N3 m4 inter", DType::kBF16);
    c.m = 4;
    c.inter = true;
    c.s_dtype = DType::kBF16;
    cases.push_back(c);
  }
  for (int mb : {1, 2}) {  // both register budgets of the D = 128 kernel
    Case c = mk("N3 m4 min_blocks=" + std::to_string(mb), DType::kFP32);
    c.m = 4;
    c.min_blocks = mb;
    c.split = -1;
    c.inter = true;
    cases.push_back(c);
  }
  uint64_t seed = 500;
  for (const Case& c : cases) {
    SECTION(c.name + " " + gka::dtype_name(c.dtype) + (c.s_dtype == DType::kBF16 ? " bf16S" : "")) {
      run_case(c, seed, c.m == 4 || !c.counts.empty());
    }
    ++seed;
  }
}

namespace {

// Continuity (spec 12.10): forward over the first T tokens into the pool, then k decode calls of m
// tokens, against one forward over all T + k m tokens (GPU and float64 reference). Views into one
// [B, T + k m, H, D] array, so every call reads the same tokens.
// Tolerances: the GPU forward's own error against float64 is bounded by its tests' o targets (bf16
// 1e-2, fp32 1e-4), the decode's as above; the pool states after prefill are the forward's fp32
// H_T / S_T (1e-5). So o of every token: bf16 1e-2, fp32 1e-4, against both references; final
// states: 1e-5 (after m k fp32 decode steps on top, 2e-5).
void continuity(gka::DType dt, int64_t B, int64_t T, int64_t k, int64_t m, uint64_t seed) {
  using gka::DType;
  const int64_t Hq = 2, Hkv = 2, D = 128, TT = T + k * m;
  gka_test::ProblemSpec spec = gka_test::problem_spec(B, TT, Hq, Hkv, D);
  spec.separate_f = true;
  const gka_test::HostProblem pr = gka_test::random_problem(spec, seed);
  RoundedTensor q, kk, v, alpha, g, f;
  upload(q, pr.q, dt);
  upload(kk, pr.k, dt);
  upload(v, pr.v, dt);
  upload(alpha, pr.alpha, dt);
  upload(g, pr.g, DType::kFP32);
  upload(f, pr.f, DType::kFP32);
  const size_t es = gka::dtype_size(dt);
  // token views starting at token t0, `len` tokens, batch stride of the full array
  auto view = [&](const RoundedTensor& x, int64_t H, int64_t w, int64_t t0) {
    gka::TokenTensor tv = gka::TokenTensor::contiguous(static_cast<uint8_t*>(x.dev.p) + t0 * H * w * (x.t == DType::kFP32 ? 4 : es), x.t, TT, H, w);
    return tv;
  };
  auto inputs = [&](int64_t t0) {
    gka::OperatorInputs in;
    in.q = view(q, Hq, D, t0);
    in.k = view(kk, Hkv, D, t0);
    in.v = view(v, Hkv, D, t0);
    in.alpha = view(alpha, Hq, 1, t0);
    in.g = view(g, Hq, 1, t0);
    in.f = view(f, Hq, 1, t0);
    return in;
  };
  DevBuf o_steps(B * TT * Hq * D * es), o_full(B * TT * Hq * D * es), ws_full, ws_pre;
  DevBuf pool_h(B * Hq * D * D * 4), pool_s(B * Hq * D * D * 4), ht(B * Hq * D * D * 4), st(B * Hq * D * D * 4);
  std::vector<int32_t> slots(B);
  for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(B - 1 - b);  // a permutation
  DevBuf slots_dev(B * 4);
  CUDA_OK(cudaMemcpy(slots_dev.p, slots.data(), B * 4, cudaMemcpyHostToDevice));
  gka::StatePool pool;
  pool.h = state(pool_h.p, DType::kFP32, Hq, D);
  pool.s = state(pool_s.p, DType::kFP32, Hq, D);
  pool.num_slots = B;
  pool.read_slots = slots_dev.p;
  pool.host_read_slots = slots.data();
  std::vector<uint8_t> no_init(B, 0);  // a fresh request: the pool's slots hold garbage (poison)
  DevBuf no_init_dev(B);
  CUDA_OK(cudaMemcpy(no_init_dev.p, no_init.data(), B, cudaMemcpyHostToDevice));
  pool.has_initial_state = static_cast<const uint8_t*>(no_init_dev.p);
  poison(pool_h, nullptr);
  poison(pool_s, nullptr);
  poison(o_steps, nullptr);
  poison(o_full, nullptr);
  gka::SolverOptions opt;
  // prefill
  gka::ForwardArgs pre;
  pre.shape = gka_test::shape_of(pr);
  pre.shape.seqlen = T;
  pre.in = inputs(0);
  pre.options = opt;
  pre.o = gka::TokenTensor::contiguous(o_steps.p, dt, TT, Hq, D);
  pre.pool = pool;
  ws_pre.reset(gka::forward_workspace_size(pre));
  {
    const gka::Result r = gka::forward(pre, ws_pre.p, ws_pre.bytes, nullptr);
    INFO(r.what());
    REQUIRE(r.ok());
  }
  // k decode calls of m tokens, continuing from the pool
  gka::StatePool dpool = pool;
  dpool.has_initial_state = nullptr;
  for (int64_t i = 0; i < k; ++i) {
    gka::DecodeArgs d;
    d.shape = pre.shape;
    d.shape.seqlen = m;
    d.in = inputs(T + i * m);
    d.options = opt;
    d.pool = dpool;
    d.o = gka::TokenTensor::contiguous(static_cast<uint8_t*>(o_steps.p) + (T + i * m) * Hq * D * es, dt, TT, Hq, D);
    const gka::Result r = gka::decode(d, nullptr);
    INFO(r.what());
    REQUIRE(r.ok());
  }
  // one forward over everything
  gka::ForwardArgs full;
  full.shape = gka_test::shape_of(pr);
  full.in = inputs(0);
  full.options = opt;
  full.o = gka::TokenTensor::contiguous(o_full.p, dt, TT, Hq, D);
  full.ht = state(ht.p, DType::kFP32, Hq, D);
  full.st = state(st.p, DType::kFP32, Hq, D);
  ws_full.reset(gka::forward_workspace_size(full));
  REQUIRE(gka::forward(full, ws_full.p, ws_full.bytes, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaGetLastError());
  // float64 reference over everything, on the rounded inputs
  gka_test::HostProblem rp = pr;
  rp.q = q.rounded; rp.k = kk.rounded; rp.v = v.rounded; rp.alpha = alpha.rounded; rp.g = g.rounded; rp.f = f.rounded;
  gka_test::ForwardOutputs ro;
  gka::ForwardArgs ra = gka_test::forward_args(rp, ro, opt);
  REQUIRE(gka::reference::forward<double>(ra).ok());
  const std::vector<double> steps = to_double(download(o_steps), dt), one = to_double(download(o_full), dt);
  // pool slot slots[b] must equal the full forward's final state of row b
  const std::vector<double> ph = to_double(download(pool_h), DType::kFP32), ps = to_double(download(pool_s), DType::kFP32);
  std::vector<double> ph_rows(ph.size()), ps_rows(ps.size());
  const size_t hd = static_cast<size_t>(Hq * D * D);
  for (int64_t b = 0; b < B; ++b) {
    std::copy(ph.begin() + slots[b] * hd, ph.begin() + (slots[b] + 1) * hd, ph_rows.begin() + b * hd);
    std::copy(ps.begin() + slots[b] * hd, ps.begin() + (slots[b] + 1) * hd, ps_rows.begin() + b * hd);
  }
  // decode tokens only (the prefill tokens are the forward's own test)
  std::vector<double> s_tail, one_tail, ref_tail;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = T; t < TT; ++t)
      for (int64_t i = 0; i < Hq * D; ++i) {
        const size_t idx = static_cast<size_t>((b * TT + t) * Hq * D + i);
        s_tail.push_back(steps[idx]);
        one_tail.push_back(one[idx]);
        ref_tail.push_back(ro.o[idx]);
      }
  const double e_gpu = gka_test::rel_error(s_tail, one_tail), e_ref = gka_test::rel_error(s_tail, ref_tail);
  const double e_all = gka_test::rel_error(steps, ro.o);
  const double e_h = gka_test::rel_error(ph_rows, ro.ht), e_s = gka_test::rel_error(ps_rows, ro.st);
  const double e_hg = gka_test::rel_error(ph_rows, to_double(download(ht), DType::kFP32));
  const double tol = dt == DType::kBF16 ? 1e-2 : dt == DType::kFP16 ? 1e-3 : 1e-4;
  std::printf("ERR| continuity B%lld T%lld + %lldx%lld %-21s | %-4s | decode o vs GPU forward %.3e | vs fp64 %.3e | all o vs fp64 %.3e | pool H %.3e S %.3e | H vs GPU H_T %.3e\n",
              (long long)B, (long long)T, (long long)k, (long long)m, "", gka::dtype_name(dt), e_gpu, e_ref, e_all, e_h,
              e_s, e_hg);
  std::fflush(stdout);
  CHECK(e_gpu <= tol);
  CHECK(e_ref <= tol);
  CHECK(e_all <= tol);
  CHECK(e_h <= 2e-5);
  CHECK(e_s <= 2e-5);
  CHECK(e_hg <= 2e-5);
}

}  // namespace

TEST_CASE("decode: prefill into the pool, then decode steps, equals one forward", "[gpu][decode][continuity]") {
  SECTION("bf16 B3 T70 + 3 x 2") { continuity(gka::DType::kBF16, 3, 70, 3, 2, 600); }
  SECTION("fp32 B2 T130 + 4 x 1") { continuity(gka::DType::kFP32, 2, 130, 4, 1, 601); }
  SECTION("bf16 B2 T64 + 2 x 4") { continuity(gka::DType::kBF16, 2, 64, 2, 4, 602); }
}

TEST_CASE("decode: bad arguments return the right status", "[gpu][decode][args]") {
  using gka::DType;
  const int64_t N = 2, Hq = 2, D = 128;
  DevBuf q(N * Hq * D * 2), kv(N * Hq * D * 2), o(N * Hq * D * 2), ph(N * Hq * D * D * 4), ps(N * Hq * D * D * 4), sl(N * 4);
  std::vector<int32_t> slots = {0, 1};
  CUDA_OK(cudaMemcpy(sl.p, slots.data(), 8, cudaMemcpyHostToDevice));
  gka::DecodeArgs good;
  good.shape.batch = N;
  good.shape.seqlen = 1;
  good.shape.heads_q = good.shape.heads_kv = Hq;
  good.shape.head_dim = D;
  good.in.q = gka::TokenTensor::contiguous(q.p, DType::kBF16, 1, Hq, D);
  good.in.k = gka::TokenTensor::contiguous(kv.p, DType::kBF16, 1, Hq, D);
  good.in.v = good.in.k;
  good.o = gka::TokenTensor::contiguous(o.p, DType::kBF16, 1, Hq, D);
  good.pool.h = state(ph.p, DType::kFP32, Hq, D);
  good.pool.s = state(ps.p, DType::kFP32, Hq, D);
  good.pool.num_slots = N;
  good.pool.read_slots = sl.p;
  good.pool.host_read_slots = slots.data();
  CUDA_OK(cudaMemset(q.p, 0, q.bytes));
  CUDA_OK(cudaMemset(kv.p, 0, kv.bytes));
  CUDA_OK(cudaMemset(ph.p, 0, ph.bytes));
  CUDA_OK(cudaMemset(ps.p, 0, ps.bytes));
  REQUIRE(gka::decode(good, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());
  { gka::DecodeArgs a = good; a.pool.read_slots = nullptr; CHECK(gka::decode(a, nullptr).status == gka::Status::kErrorNullPointer); }
  { gka::DecodeArgs a = good; a.shape.head_dim = 96; CHECK(gka::decode(a, nullptr).status == gka::Status::kErrorUnsupportedHeadDim); }
  { gka::DecodeArgs a = good; a.pool.h.dtype = DType::kBF16; CHECK(gka::decode(a, nullptr).status == gka::Status::kErrorUnsupportedDType); }
  { gka::DecodeArgs a = good; a.pool.s.dtype = DType::kFP16; CHECK(gka::decode(a, nullptr).status == gka::Status::kErrorUnsupportedDType); }
  {
    std::vector<int32_t> bad = {0, 5};
    gka::DecodeArgs a = good; a.pool.host_read_slots = bad.data();
    CHECK(gka::decode(a, nullptr).status == gka::Status::kErrorInvalidSlot);
  }
  {
    std::vector<int32_t> wr = {1, 0};  // sequence 0 writes the slot sequence 1 reads: one-pass race
    gka::DecodeArgs a = good; a.pool.write_slots = sl.p; a.pool.host_write_slots = wr.data();
    const gka::Result r = gka::decode(a, nullptr);
    INFO(r.what());
    CHECK(r.status == gka::Status::kErrorInvalidSlot);
  }
  { gka::DecodeArgs a = good; a.options.num_iter = -2; CHECK(gka::decode(a, nullptr).status == gka::Status::kErrorInvalidIterationCount); }
  { gka::DecodeArgs a = good; a.shape.heads_kv = 3; CHECK(gka::decode(a, nullptr).status == gka::Status::kErrorHeadGrouping); }
  {
    gka::DecodeArgs a = good; a.pool.h.data = static_cast<uint8_t*>(ph.p) + 4;
    CHECK(gka::decode(a, nullptr).status == gka::Status::kErrorMisaligned);
  }
  {  // the forward's pool excludes h0 / ht
    gka::ForwardArgs f;
    f.shape = good.shape;
    f.in = good.in;
    f.o = good.o;
    f.pool = good.pool;
    f.ht = good.pool.h;
    CHECK(gka::forward(f, nullptr, 0, nullptr).status == gka::Status::kErrorInvalidShape);
  }
  CUDA_OK(cudaGetLastError());
}
