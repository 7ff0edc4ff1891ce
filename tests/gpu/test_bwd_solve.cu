// tests/gpu/test_bwd_solve.cu: the backward's adjoint-solve kernel (kernels/bwd_solve_kernel.cuh)
// against a float64 host mirror of reference/head_backward_chunked.h (gla_adjoint_chunked's dq~,
// the alpha-mix adjoint, solve_adjoint_chunked with the Chebyshev method).
//
// The kernel's inputs are those of a real forward on fresh realistic random inputs
// (tests/common/random_inputs.h) rounded to the device dtypes: x and nu from the float64 reference
// forward (gka::reference::forward) on the rounded inputs, then stored in fp32 as the GPU forward
// saves them; the chunk states H-bar / S-bar from a float64 host scan (head_backward_chunked.h),
// stored in the state dtype. The host expectation uses exactly those stored values, so the measured
// error is the kernel's own. (This TU does not include api/forward.cuh: kernels/chunk_table_kernel.cuh
// defines a non-template __global__, which cannot be included by two test TUs of one binary; the
// varlen chunk table is built on the host instead.) Every output is NaN-poisoned before a launch; a
// second launch must be bitwise equal. Each configuration prints one "ERR|" line with the relative
// L2 errors.
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
#include "gka/backward/mix_adjoint.h"
#include "gka/backward/ridge_adjoint.h"
#include "gka/args.h"
#include "gka/kernels/backward_params.cuh"
#include "gka/kernels/bwd_solve_kernel.cuh"
#include "gka/numeric/host_convert.h"
#include "gka/reference/head_backward_chunked.h"
#include "gka/reference/reference.h"

namespace {

using gka_test::DevBuf;
using gka_test::RoundedTensor;
using gka_test::download;
using gka_test::to_double;
using gka_test::tok;
using gka_test::upload;

struct Case {
  std::string name;
  gka_test::ProblemSpec spec;
  gka::DType dtype = gka::DType::kBF16;        // q, k, v, alpha, dO, dq, dalpha
  gka::DType state_dtype = gka::DType::kFP32;  // the forward's chunk_state_dtype = the kernel's TState
  int num_iter = 30;
  bool bp_lambda = true;
  std::function<void(gka_test::HostProblem&)> mutate;
  // relative L2 tolerances, set per dtype by mk()
  double tol_dq = 0, tol_dalpha = 0, tol_z = 0, tol_qmix = 0, tol_qdq = 0, tol_w = 0;
};

// Tolerances (relative L2 against the float64 mirror on the same inputs, states, x and nu). In
// brackets: the largest value measured over the cases that use the bound (H200, first run of this
// test); every bound keeps at least 2x over it.
//  - z: the solve runs the forward's program, so it gets the forward's x bounds: the bf16 policy
//    (bf16 H-bar and steps) 1e-2 [2.8e-3]; the split policy (hi + lo H-bar, K, P; fp16 / fp32
//    inputs) 1e-4 [5.2e-5].
//  - dq~ itself is formed with ~16-bit operands (dO exact or hi + lo, S-bar and P hi + lo, K and V
//    exact or hi + lo) and fp32 accumulation: ~2^-16 relative. It reaches the fp32 outputs qdq
//    (tolerance 1e-4 for every dtype, ~6x that operand error) [2.3e-5] and, through dalpha, dq.
//  - dq = (1 - alpha) dq~ + z: the z bound, but stored in the input dtype, so at least the
//    dtype's rounding target: bf16 1e-2 [3.1e-3], fp16 1e-3 (2 unit roundoffs) [2.1e-4], fp32 the
//    z bound 1e-4 [4.6e-5].
//  - dalpha = dq~ . (x - q): dq~'s accuracy, stored in the input dtype: bf16 1e-2 (2^-8 > the
//    worst-case relative rounding) [1.7e-3], fp16 1e-3 [1.8e-4], fp32 1e-4 [3.0e-5].
//  - qmix = q + alpha (x - q) in fp32 from exact inputs: a few fp32 roundings, 1e-6 [3.6e-8].
//  - w, u nu = a z.x (2 / nu, nu): z.x pairs two vectors dominated by the same small-eigenvalue
//    directions of A, with largely unrelated signs, so it cancels by up to ~1/sqrt(D) ~ 1/10 and
//    z's relative error can grow ~10x: 10 x the z bound against the reference [bf16 1.0e-2,
//    fp32 1.6e-4]. The kernel's own arithmetic is checked tightly on its own z: w and u nu from
//    the downloaded z and x in float64 must agree to 1e-5 (fp32 dot products of D terms) [2.2e-7].
Case mk(const std::string& name, gka_test::ProblemSpec s, gka::DType t) {
  Case c;
  c.name = name;
  c.spec = s;
  c.dtype = t;
  c.tol_qmix = 1e-6;
  c.tol_qdq = 1e-4;
  if (t == gka::DType::kBF16) { c.tol_z = 1e-2; c.tol_dq = 1e-2; c.tol_dalpha = 1e-2; }
  if (t == gka::DType::kFP16) { c.tol_z = 1e-4; c.tol_dq = 1e-3; c.tol_dalpha = 1e-3; }
  if (t == gka::DType::kFP32) { c.tol_z = 1e-4; c.tol_dq = 1e-4; c.tol_dalpha = 1e-4; }
  c.tol_w = 10 * c.tol_z;
  return c;
}

gka_test::ProblemSpec spec(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D) {
  return gka_test::problem_spec(B, T, Hq, Hkv, D);
}

// The kernel for (D, policy, state dtype), with its shared-memory attribute set.
template <int D, bool kSplit, class TState>
void launch_typed(const gka::kernels::BackwardParams& p, int64_t chunk_bound, cudaStream_t stream) {
  auto kern = gka::kernels::bwd_solve_kernel<D, kSplit, TState>;
  const int smem = gka::kernels::BwdSolveSmem<D, kSplit>::kBytes;
  CUDA_OK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(static_cast<unsigned>(chunk_bound), static_cast<unsigned>(p.heads_q));
  kern<<<grid, gka::kernels::kBwdSolveThreads, smem, stream>>>(p);
  CUDA_OK(cudaGetLastError());
}
void launch(const gka::kernels::BackwardParams& p, int64_t D, bool split, bool bf16_states, int64_t chunk_bound,
            cudaStream_t stream) {
  using bf16 = __nv_bfloat16;
  if (bf16_states) {  // the instantiations the cases use
    REQUIRE((D == 128 && !split));
    launch_typed<128, false, bf16>(p, chunk_bound, stream);
    return;
  }
  if (D == 64) split ? launch_typed<64, true, float>(p, chunk_bound, stream) : launch_typed<64, false, float>(p, chunk_bound, stream);
  else split ? launch_typed<128, true, float>(p, chunk_bound, stream) : launch_typed<128, false, float>(p, chunk_bound, stream);
}

struct Expected {
  std::vector<double> dq, dalpha, z, qmix, qdq, w, unu;
};

// The float64 mirror of head_backward_chunked.h for every (sequence, query head).
Expected expected(const Case& cs, const gka_test::HostProblem& pr, const std::vector<double>& q,
                  const std::vector<double>& k, const std::vector<double>& v, const std::vector<double>& alpha,
                  const std::vector<double>& g, const std::vector<double>& f, const std::vector<double>& d_o,
                  const std::vector<double>& x, const std::vector<double>& nu, const std::vector<double>& states_h,
                  const std::vector<double>& states_s, double scale) {
  using namespace gka::reference;
  const auto& s = pr.spec;
  const int64_t D = s.D, Hq = s.Hq, Hkv = s.Hkv, grp = Hq / Hkv, C = 64;
  const size_t tokens = static_cast<size_t>(s.B * s.T);
  Expected e;
  e.dq.assign(tokens * Hq * D, NAN);
  e.z = e.qmix = e.dq;
  e.dalpha.assign(tokens * Hq, NAN);
  e.qdq = e.w = e.unu = e.dalpha;
  struct Seq { int64_t row0, T, chunk0; };  // first token row (b * T + t), length, first chunk index
  std::vector<Seq> seqs;
  if (s.cu_seqlens.empty()) {
    for (int64_t b = 0; b < s.B; ++b) seqs.push_back({b * s.T, s.T, b * ((s.T + C - 1) / C)});
  } else {
    int64_t chunk0 = 0;
    for (size_t i = 0; i + 1 < s.cu_seqlens.size(); ++i) {
      const int64_t len = s.cu_seqlens[i + 1] - s.cu_seqlens[i];
      seqs.push_back({s.cu_seqlens[i], len, chunk0});
      chunk0 += (len + C - 1) / C;
    }
  }
  SolverParams sp;
  sp.num_iter = cs.num_iter;
  sp.ratio = 0.02;
  sp.scale = scale;
  sp.method = SolveMethod::kChebyshev;
  for (const Seq& sq : seqs)
    for (int64_t h = 0; h < Hq; ++h) {
      const int T = static_cast<int>(sq.T), hk = static_cast<int>(h / grp);
      auto rows = [&](const std::vector<double>& a, int64_t H, int64_t head) {  // [T][D] of one head
        std::vector<double> out(static_cast<size_t>(T) * D);
        for (int t = 0; t < T; ++t)
          for (int64_t d = 0; d < D; ++d) out[t * D + d] = a[((sq.row0 + t) * H + head) * D + d];
        return out;
      };
      auto scal = [&](const std::vector<double>& a, double dflt) {
        std::vector<double> out(T, dflt);
        if (!a.empty())
          for (int t = 0; t < T; ++t) out[t] = a[(sq.row0 + t) * Hq + h];
        return out;
      };
      const auto Q = rows(q, Hq, h), K = rows(k, Hkv, hk), V = rows(v, Hkv, hk), dO = rows(d_o, Hq, h),
                 X = rows(x, Hq, h);
      const auto A = scal(alpha, 1.0), Nu = scal(nu, 0.0), Gg = scal(g, 0.0), Gf = f.empty() ? Gg : scal(f, 0.0);
      const auto chunks_h = make_chunks<double>(T, static_cast<int>(C), [&](int t) { return Gf[t]; });
      const auto chunks_s = make_chunks<double>(T, static_cast<int>(C), [&](int t) { return Gg[t]; });
      const size_t DD = static_cast<size_t>(D * D);
      std::vector<std::vector<double>> Hbar, Sbar;
      for (size_t n = 0; n < chunks_h.size(); ++n) {
        const size_t base = ((sq.chunk0 + n) * Hq + h) * DD;
        Hbar.emplace_back(states_h.begin() + base, states_h.begin() + base + DD);
        Sbar.emplace_back(states_s.begin() + base, states_s.begin() + base + DD);
      }
      // gla_adjoint_chunked step 3, dq~ only
      std::vector<double> dqt(static_cast<size_t>(T) * D, 0.0), tmp(D);
      for (size_t n = 0; n < chunks_s.size(); ++n) {
        const Chunk<double>& c = chunks_s[n];
        for (int j = 0; j < c.len; ++j) {
          const int tj = c.t0 + j;
          for (int64_t a = 0; a < D; ++a) {
            double acc = 0;
            for (int64_t bb = 0; bb < D; ++bb) acc += Sbar[n][a * D + bb] * dO[tj * D + bb];
            dqt[tj * D + a] = scale * c.gamma(j) * acc;
          }
          for (int i = 0; i <= j; ++i) {
            const int ti = c.t0 + i;
            double dov = 0;
            for (int64_t bb = 0; bb < D; ++bb) dov += dO[tj * D + bb] * V[ti * D + bb];
            const double l = scale * c.mask(j, i) * dov;
            for (int64_t a = 0; a < D; ++a) dqt[tj * D + a] += l * K[ti * D + a];
          }
        }
      }
      // alpha-mix adjoint, solve adjoint, per-token scalars
      std::vector<double> dX(dqt.size()), dq(dqt.size()), dal(T);
      for (int t = 0; t < T; ++t)
        dal[t] = gka::grad::mix_adjoint_row<double>(static_cast<int>(D), A[t], &dqt[t * D], &Q[t * D], &X[t * D],
                                                        cs.num_iter, &dX[t * D], &dq[t * D]);
      const std::vector<double> Z =
          solve_adjoint_chunked<double>(T, static_cast<int>(D), chunks_h, K.data(), Hbar, Nu.data(), dX.data(), sp);
      for (int t = 0; t < T; ++t) {
        const size_t tok_h = static_cast<size_t>((sq.row0 + t) * Hq + h);
        double qdq = 0, zx = 0;
        for (int64_t d = 0; d < D; ++d) {
          const size_t i = t * D + d;
          const double qm = cs.num_iter > 0 ? gka::grad::mix_query(A[t], Q[i], X[i]) : Q[i];
          qdq += qm * dqt[i];
          zx += Z[i] * X[i];
          e.dq[tok_h * D + d] = dq[i] + gka::grad::solve_query_grad(cs.num_iter, dX[i], Z[i]);
          e.z[tok_h * D + d] = Z[i];
          e.qmix[tok_h * D + d] = qm;
        }
        const auto r = cs.bp_lambda ? gka::grad::ridge_adjoint(0.02, zx, Nu[t]) : gka::grad::RidgeAdjoint<double>{};
        e.dalpha[tok_h] = dal[t];
        e.qdq[tok_h] = qdq;
        e.w[tok_h] = r.w;
        e.unu[tok_h] = r.u_nu;
      }
    }
  return e;
}

void run_case(const Case& cs, uint64_t seed) {
  const auto& s = cs.spec;
  gka_test::HostProblem pr = gka_test::random_problem(s, seed);
  if (cs.mutate) cs.mutate(pr);
  const int64_t T = s.T, Hq = s.Hq, Hkv = s.Hkv, D = s.D, B = s.B;
  const size_t tokens = static_cast<size_t>(B * T);
  // inputs on the device (and their rounded values)
  RoundedTensor q, k, v, alpha, g, f, h0, s0, d_o;
  upload(q, pr.q, cs.dtype);
  upload(k, pr.k, cs.dtype);
  upload(v, pr.v, cs.dtype);
  upload(alpha, pr.alpha, cs.dtype);
  upload(g, pr.g, gka::DType::kFP32);
  upload(f, pr.f, gka::DType::kFP32);
  upload(h0, pr.h0, gka::DType::kFP32);
  upload(s0, pr.s0, gka::DType::kFP32);
  {
    std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
    std::normal_distribution<double> n01(0.0, 1.0);
    std::vector<double> dov(tokens * Hq * D);
    for (double& x : dov) x = n01(rng);
    upload(d_o, dov, cs.dtype);
  }
  // x, nu: the float64 reference forward on the rounded inputs, stored in fp32 as the GPU forward does
  gka_test::HostProblem rp = pr;  // the values the device holds
  rp.q = q.rounded; rp.k = k.rounded; rp.v = v.rounded; rp.alpha = alpha.rounded;
  rp.g = g.rounded; rp.f = f.rounded; rp.h0 = h0.rounded; rp.s0 = s0.rounded;
  gka::SolverOptions opt;
  opt.num_iter = cs.num_iter;
  gka_test::ForwardOutputs fo;
  {
    const gka::Result r = gka::reference::forward<double>(gka_test::forward_args(rp, fo, opt));
    INFO(r.what());
    REQUIRE(r.ok());
  }
  RoundedTensor x, nu;
  upload(x, fo.x, gka::DType::kFP32);
  upload(nu, fo.nu, gka::DType::kFP32);

  // chunk geometry (the varlen table built on the host) and the chunk states H-bar_n, S-bar_n
  constexpr int C = 64;
  struct Seq { int64_t t0, len; };
  std::vector<Seq> seqs;
  if (s.cu_seqlens.empty()) for (int64_t b = 0; b < B; ++b) seqs.push_back({0, T});
  else for (size_t i = 0; i + 1 < s.cu_seqlens.size(); ++i) seqs.push_back({s.cu_seqlens[i], s.cu_seqlens[i + 1] - s.cu_seqlens[i]});
  const bool varlen = !s.cu_seqlens.empty();
  const int64_t chunk_bound = gka::tiling::chunk_bound(B, T, varlen, s.num_states(), C);
  std::vector<int64_t> table(chunk_bound, -1);
  std::vector<gka::tiling::SeqEntry> entries;
  const size_t DD = static_cast<size_t>(D * D);
  std::vector<double> states_h(chunk_bound * Hq * DD, 0.0), states_s(states_h.size(), 0.0);
  {
    int64_t chunk0 = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int64_t nchunks = (seqs[i].len + C - 1) / C;
      entries.push_back({seqs[i].t0, seqs[i].len, chunk0, varlen ? 0 : static_cast<int64_t>(i)});
      for (int64_t n = 0; n < nchunks; ++n) table[chunk0 + n] = (static_cast<int64_t>(i) << 32) | n;
      const int64_t row0 = (varlen ? 0 : static_cast<int64_t>(i) * T) + seqs[i].t0;
      const int Ts = static_cast<int>(seqs[i].len);
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t hk = h / (Hq / Hkv);
        std::vector<double> K(Ts * D), V(Ts * D), gg(Ts, 0.0), ff(Ts, 0.0);
        for (int t = 0; t < Ts; ++t) {
          for (int64_t d = 0; d < D; ++d) {
            K[t * D + d] = rp.k[((row0 + t) * Hkv + hk) * D + d];
            V[t * D + d] = rp.v[((row0 + t) * Hkv + hk) * D + d];
          }
          if (!rp.g.empty()) gg[t] = rp.g[(row0 + t) * Hq + h];
          ff[t] = rp.f.empty() ? gg[t] : rp.f[(row0 + t) * Hq + h];
        }
        const auto ch = gka::reference::make_chunks<double>(Ts, C, [&](int t) { return ff[t]; });
        const auto cs_ = gka::reference::make_chunks<double>(Ts, C, [&](int t) { return gg[t]; });
        const double* h0p = rp.h0.empty() ? nullptr : &rp.h0[(i * Hq + h) * DD];
        const double* s0p = rp.s0.empty() ? nullptr : &rp.s0[(i * Hq + h) * DD];
        const auto Hs = gka::reference::covariance_chunk_states(static_cast<int>(D), ch, K.data(), h0p);
        const auto Ss = gka::reference::chunked_detail::scan_states(static_cast<int>(D), cs_, K.data(), V.data(), s0p);
        for (int64_t n = 0; n < nchunks; ++n) {
          std::copy(Hs[n].begin(), Hs[n].end(), states_h.begin() + ((chunk0 + n) * Hq + h) * DD);
          std::copy(Ss[n].begin(), Ss[n].end(), states_s.begin() + ((chunk0 + n) * Hq + h) * DD);
        }
      }
      chunk0 += nchunks;
    }
  }
  RoundedTensor sh, ss;  // [chunk_bound][H_q][D][D] in the state dtype
  upload(sh, states_h, cs.state_dtype);
  upload(ss, states_s, cs.state_dtype);
  DevBuf table_dev, seqs_dev;
  if (varlen) {
    table_dev.reset(table.size() * sizeof(int64_t));
    seqs_dev.reset(entries.size() * sizeof(gka::tiling::SeqEntry));
    REQUIRE((table_dev.p && seqs_dev.p));
    CUDA_OK(cudaMemcpy(table_dev.p, table.data(), table_dev.bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(seqs_dev.p, entries.data(), seqs_dev.bytes, cudaMemcpyHostToDevice));
  }

  // outputs
  DevBuf dq(tokens * Hq * D * gka::dtype_size(cs.dtype)), dalpha(tokens * Hq * gka::dtype_size(cs.dtype));
  DevBuf z(tokens * Hq * D * 4), qmix(tokens * Hq * D * 4), qdq(tokens * Hq * 4), w(tokens * Hq * 4),
      unu(tokens * Hq * 4);
  REQUIRE((dq.p && dalpha.p && z.p && qmix.p && qdq.p && w.p && unu.p));

  auto gate = [](const RoundedTensor& t, int64_t Tn, int64_t H) {  // api/forward.cuh: make_gate
    gka::gating::Gate gt;
    if (t.dev.p == nullptr) return gt;
    gt.data = static_cast<const float*>(t.dev.p);
    gt.stride_batch = Tn * H;
    gt.stride_token = H;
    gt.stride_head = 1;
    return gt;
  };
  gka::kernels::BackwardParams p;
  p.geo.batch = B;
  p.geo.seqlen = T;
  p.geo.chunk = C;
  p.geo.varlen = varlen;
  p.geo.num_seqs = s.num_states();
  p.geo.chunk_bound = chunk_bound;
  if (varlen) {
    p.geo.table = static_cast<const int64_t*>(table_dev.p);
    p.geo.seqs = static_cast<const gka::tiling::SeqEntry*>(seqs_dev.p);
  }
  p.heads_q = Hq;
  p.group = Hq / Hkv;
  p.q = tok(q, true, T, Hq, D);
  p.k = tok(k, true, T, Hkv, D);
  p.v = tok(v, true, T, Hkv, D);
  p.alpha = tok(alpha, true, T, Hq, 1);
  p.x = tok(x, true, T, Hq, D);
  p.nu = tok(nu, true, T, Hq, 1);
  p.d_o = tok(d_o, true, T, Hq, D);
  p.gate_s = gate(g, T, Hq);
  p.gate_h = f.dev.p ? gate(f, T, Hq) : p.gate_s;
  p.f_given = f.dev.p != nullptr;
  p.num_iter = cs.num_iter;
  p.ridge = 0.02f;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  p.scale = static_cast<float>(scale);
  p.bp_lambda = cs.bp_lambda;
  p.states_h = sh.dev.p;
  p.states_s = ss.dev.p;
  p.dq = gka::TokenTensor::contiguous(dq.p, cs.dtype, T, Hq, D);
  p.dalpha = gka::TokenTensor::contiguous(dalpha.p, cs.dtype, T, Hq, 1);
  p.ws.z = gka::TokenTensor::contiguous(z.p, gka::DType::kFP32, T, Hq, D);
  p.ws.qmix = gka::TokenTensor::contiguous(qmix.p, gka::DType::kFP32, T, Hq, D);
  p.ws.qdq = gka::TokenTensor::contiguous(qdq.p, gka::DType::kFP32, T, Hq, 1);
  p.ws.w = gka::TokenTensor::contiguous(w.p, gka::DType::kFP32, T, Hq, 1);
  p.ws.unu = gka::TokenTensor::contiguous(unu.p, gka::DType::kFP32, T, Hq, 1);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));

  const bool split = cs.dtype != gka::DType::kBF16;  // forward.cuh: split_policy
  const bool bf16_states = cs.state_dtype == gka::DType::kBF16;
  std::vector<DevBuf*> outs = {&dq, &dalpha, &z, &qmix, &qdq, &w, &unu};
  auto run_once = [&]() {
    for (DevBuf* b : outs) CUDA_OK(cudaMemsetAsync(b->p, 0xff, b->bytes, stream));  // NaN in every dtype
    launch(p, D, split, bf16_states, chunk_bound, stream);
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaGetLastError());
    std::vector<std::vector<uint8_t>> h;
    for (DevBuf* b : outs) h.push_back(download(*b));
    return h;
  };
  const auto first = run_once();

  // the expectation from the kernel's own inputs
  const Expected ex = expected(cs, pr, q.rounded, k.rounded, v.rounded, alpha.rounded, g.rounded, f.rounded,
                               d_o.rounded, x.rounded, nu.rounded, sh.rounded, ss.rounded, scale);
  const double e_dq = gka_test::rel_error(to_double(first[0], cs.dtype), ex.dq);
  const double e_da = gka_test::rel_error(to_double(first[1], cs.dtype), ex.dalpha);
  const double e_z = gka_test::rel_error(to_double(first[2], gka::DType::kFP32), ex.z);
  const double e_qm = gka_test::rel_error(to_double(first[3], gka::DType::kFP32), ex.qmix);
  const double e_qdq = gka_test::rel_error(to_double(first[4], gka::DType::kFP32), ex.qdq);
  const double e_w = gka_test::rel_error(to_double(first[5], gka::DType::kFP32), ex.w);
  const double e_unu = gka_test::rel_error(to_double(first[6], gka::DType::kFP32), ex.unu);
  // w, u nu recomputed from the kernel's own z (and the saved x, nu): the epilogue's arithmetic
  double e_wself = 0;
  if (cs.num_iter > 0) {
    const std::vector<double> zd = to_double(first[2], gka::DType::kFP32), &xd = x.rounded, &nud = nu.rounded;
    std::vector<double> w_self(nud.size()), unu_self(nud.size());
    for (size_t t = 0; t < nud.size(); ++t) {
      double zx = 0;
      for (int64_t d = 0; d < D; ++d) zx += zd[t * D + d] * xd[t * D + d];
      const auto r = cs.bp_lambda ? gka::grad::ridge_adjoint(0.02, zx, nud[t]) : gka::grad::RidgeAdjoint<double>{};
      w_self[t] = r.w;
      unu_self[t] = r.u_nu;
    }
    e_wself = std::fmax(gka_test::rel_error(to_double(first[5], gka::DType::kFP32), w_self),
                        gka_test::rel_error(to_double(first[6], gka::DType::kFP32), unu_self));
  }
  const std::string label = cs.name + (bf16_states ? " [bf16 states]" : "");
  std::printf("ERR| %-40s | %-4s | dq %.3e | dalpha %.3e | z %.3e | qmix %.3e | qdq %.3e | w %.3e | unu %.3e | "
              "w,unu(own z) %.3e\n",
              label.c_str(), gka::dtype_name(cs.dtype), e_dq, e_da, e_z, e_qm, e_qdq, e_w, e_unu, e_wself);
  std::fflush(stdout);
  CHECK(e_dq <= cs.tol_dq);
  CHECK(e_da <= cs.tol_dalpha);
  CHECK(e_z <= cs.tol_z);
  CHECK(e_qm <= cs.tol_qmix);
  CHECK(e_qdq <= cs.tol_qdq);
  CHECK(e_w <= cs.tol_w);
  CHECK(e_unu <= cs.tol_w);
  CHECK(e_wself <= 1e-5);
  if (cs.num_iter == 0) {  // spec 12.13: no solve, dalpha = 0, z = 0, dq = dq~
    CHECK(gka_test::max_abs(to_double(first[1], cs.dtype)) == 0.0);
    CHECK(gka_test::max_abs(to_double(first[2], gka::DType::kFP32)) == 0.0);
  }
  // determinism: a freshly poisoned second launch is bitwise equal
  const auto second = run_once();
  for (size_t i = 0; i < first.size(); ++i) CHECK(first[i] == second[i]);
  CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace

TEST_CASE("bwd solve: dq~, alpha-mix adjoint and z = CH(A, dX) per chunk", "[gpu][bwd]") {
  using gka::DType;
  std::vector<Case> cases;
  for (int64_t D : {128, 64}) {
    auto s = spec(2, 150, 2, 1, D);  // T = 150: a partial last chunk (22 tokens); GQA 2/1
    s.h0 = s.s0 = true;
    s.separate_f = D == 128;
    const std::string n = "B2 T150 H2/1 D" + std::to_string(D) + (D == 128 ? " f!=g" : " f=g") + " h0 s0";
    cases.push_back(mk(n, s, DType::kBF16));
    cases.push_back(mk(n, s, DType::kFP32));
  }
  {
    auto s = spec(2, 150, 2, 1, 128); s.h0 = s.s0 = true; s.separate_f = true;
    Case c = mk("B2 T150 H2/1 D128 f!=g h0 s0", s, DType::kBF16);
    c.state_dtype = DType::kBF16;  // TState = bf16: S-bar exactly its hi part
    cases.push_back(c);
    cases.push_back(mk("B2 T150 H2/1 D128 f!=g h0 s0", s, DType::kFP16));
  }
  {
    auto s = spec(1, 150, 4, 1, 64); s.cu_seqlens = {0, 5, 69, 150}; s.h0 = s.s0 = true;
    Case c = mk("varlen [5,64,81] GQA 4/1 D64 no bp_lambda", s, DType::kBF16);
    c.bp_lambda = false;
    cases.push_back(c);
  }
  {
    auto s = spec(2, 150, 2, 1, 64); s.h0 = s.s0 = true;
    Case c = mk("r=0 B2 T150 D64", s, DType::kBF16);
    c.num_iter = 0;
    cases.push_back(c);
  }
  {
    // spec 12.4 / 12.13: zero keys at a sequence start (no h0) give nu = 0 there, so z = 0 and
    // dq = (1 - alpha) dq~ on those rows
    auto s = spec(2, 150, 2, 1, 64); s.s0 = true;
    Case c = mk("zero keys at start (nu = 0 guard) D64", s, DType::kBF16);
    c.mutate = [](gka_test::HostProblem& p) {
      const auto& sp = p.spec;
      for (int64_t b = 0; b < sp.B; ++b)
        for (int64_t t = 0; t < 3 + 40 * b; ++t)
          for (int64_t i = 0; i < sp.Hkv * sp.D; ++i) p.k[(b * sp.T + t) * sp.Hkv * sp.D + i] = 0.0;
    };
    cases.push_back(c);
  }
  uint64_t seed = 500;
  for (const Case& c : cases) {
    SECTION(c.name + " " + gka::dtype_name(c.dtype) + (c.state_dtype == DType::kBF16 ? " bf16 states" : "")) {
      run_case(c, seed);
    }
    ++seed;
  }
}
