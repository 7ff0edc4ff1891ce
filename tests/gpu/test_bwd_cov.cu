// tests/gpu/test_bwd_cov.cu: kernels::bwd_cov_kernel (the covariance adjoint's intra-chunk pass)
// against a float64 host mirror of covariance_adjoint_chunked's Pass D / E / F, on fresh random
// inputs in the workspace layouts of kernels/backward_params.cuh: K (bf16 or fp32, GQA 2/1), x, z,
// w, u nu (consistent: ridge_adjoint(a, z.x, nu)), Hbar_n from a float64 scan of the keys (PSD),
// random R-bar_n (not symmetric) and B~_n (symmetric), a random "GLA part" in ws.dk and dg_s.
// The host mirror itself is first checked against reference::covariance_adjoint_chunked with
// R-bar and B~ from the reverse scans (to 1e-12). Outputs are NaN-poisoned, two runs must be
// bitwise equal, and each configuration prints one "ERR|" line.
#include "common/catch.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/compare.h"
#include "common/device.h"
#include "common/perf.h"
#include "gka/backward/ridge_adjoint.h"
#include "gka/kernels/bwd_cov_kernel.cuh"
#include "gka/numeric/host_convert.h"
#include "gka/reference/head_backward_chunked.h"

namespace {

using gka_test::DevBuf;
using gka_test::download_f32;
using gka_test::upload;

constexpr int kC = gka::kernels::kBwdCovChunk;

// x rounded to dtype t (the values the kernel reads), in place; returns the bytes.
std::vector<uint8_t> round_to(std::vector<double>& x, gka::DType t) {
  std::vector<uint8_t> b(x.size() * gka::dtype_size(t));
  for (size_t i = 0; i < x.size(); ++i) {
    gka::store_from_double(b.data(), t, static_cast<int64_t>(i), x[i]);
    x[i] = gka::load_as_double(b.data(), t, static_cast<int64_t>(i));
  }
  return b;
}

double dot(int D, const double* a, const double* b) {
  double s = 0;
  for (int i = 0; i < D; ++i) s += a[i] * b[i];
  return s;
}
// y = M v (transpose: M^T v), M row-major D x D
void matvec(int D, const double* M, const double* v, double* y, bool transpose = false) {
  for (int i = 0; i < D; ++i) {
    double s = 0;
    for (int j = 0; j < D; ++j) s += (transpose ? M[j * D + i] : M[i * D + j]) * v[j];
    y[i] = s;
  }
}

// One chunk of covariance_adjoint_chunked, pre-negated: Pass D with the given R-bar_n (R), the
// Pass-E consumption of B~_n (Bt, lam only) and the chunk-end terms. Rows are pointers (strided
// layouts); F is the chunk-local cumsum. Writes dk_pre [len][D] and dF_pre [len].
void mirror_chunk(int D, int len, const std::vector<double>& F, const std::vector<const double*>& k,
                  const std::vector<const double*>& x, const std::vector<const double*>& z, const double* w,
                  const double* unu, const double* H, const double* R, const double* Bt, bool lam,
                  std::vector<double>& dk_pre, std::vector<double>& dF) {
  const double Fend = F[len - 1];
  auto U = [&](int i, int j) { return j >= i ? std::exp(F[j] - F[i]) : 0.0; };
  auto gam = [&](int j) { return std::exp(F[j]); };
  std::vector<double> kap(len * D), P(len * len), Qp(len * len), Y(len * len), b(len, 0.0), W(len * len, 0.0);
  for (int i = 0; i < len; ++i)
    for (int a = 0; a < D; ++a) kap[i * D + a] = std::exp(Fend - F[i]) * k[i][a];
  for (int i = 0; i < len; ++i)
    for (int j = 0; j < len; ++j) {
      Qp[i * len + j] = dot(D, k[i], z[j]);
      P[i * len + j] = dot(D, k[i], x[j]) * U(i, j);
      Y[i * len + j] = P[i * len + j] * Qp[i * len + j];
      if (lam) b[i] += U(i, j) * gam(j) * w[j];
    }
  if (lam)
    for (int i = 0; i < len; ++i)
      for (int l = 0; l < len; ++l)
        for (int j = 0; j < len; ++j) W[i * len + l] += U(i, j) * w[j] * U(l, j);
  dk_pre.assign(static_cast<size_t>(len) * D, 0.0);
  dF.assign(len, 0.0);
  std::vector<double> t1(D), t2(D), lp(D);
  double end_r = 0, end_b = 0;
  for (int i = 0; i < len; ++i) {
    double* dk = &dk_pre[i * D];
    const double* ka = &kap[i * D];
    matvec(D, R, ka, t1.data());
    matvec(D, R, ka, t2.data(), true);
    for (int a = 0; a < D; ++a) dk[a] = t1[a] + t2[a];
    for (int j = 0; j < len; ++j)
      for (int a = 0; a < D; ++a) dk[a] += P[i * len + j] * z[j][a] + Qp[i * len + j] * U(i, j) * x[j][a];
    double dFi = 0;
    for (int l = 0; l < len; ++l) dFi += Y[l * len + i] - Y[i * len + l];
    matvec(D, H, x[i], t1.data());
    dFi += gam(i) * dot(D, z[i], t1.data());
    matvec(D, R, k[i], t1.data());
    const double kRk = dot(D, ka, t1.data());
    dFi -= kRk;
    end_r += kRk;
    if (lam) {
      matvec(D, H, k[i], t1.data());
      for (int a = 0; a < D; ++a) lp[a] = b[i] * t1[a];
      for (int l = 0; l < len; ++l) {
        const double coef = dot(D, k[i], k[l]) * W[i * len + l];
        for (int a = 0; a < D; ++a) lp[a] += coef * k[l][a];
      }
      for (int a = 0; a < D; ++a) dk[a] += lp[a];
      dFi += unu[i] - 0.5 * dot(D, k[i], lp.data());
      // Pass E: B~ kappa_i, -1/2 kappa_i^T B~ k_i
      matvec(D, Bt, k[i], t1.data());
      const double s = std::exp(Fend - F[i]);
      for (int a = 0; a < D; ++a) dk[a] += s * t1[a];
      const double kBk = s * dot(D, k[i], t1.data());
      dFi -= 0.5 * kBk;
      end_b += kBk;
    }
    dF[i] = dFi;
  }
  dF[len - 1] += end_r + std::exp(Fend) * dot(D * D, R, H);
  if (lam) dF[len - 1] += 0.5 * (std::exp(Fend) * dot(D * D, Bt, H) + end_b);
}

// ---- problem --------------------------------------------------------------------------------------
struct Case {
  int D = 64;
  gka::DType kdt = gka::DType::kBF16;
  bool lam = true, f_given = false, bf16_state = false;
  std::string name() const {
    return "D" + std::to_string(D) + " K " + gka::dtype_name(kdt) + (lam ? " lambda" : " no-lambda") +
           (f_given ? " f given" : " f=g") + (bf16_state ? " bf16 Hbar" : "");
  }
};

struct Host {
  int64_t B = 2, T = 150, Hq = 2, Hkv = 1, D = 64, Nrow = 0, CB = 0;
  std::vector<double> k, x, z, w, unu, gate, gla_dk, dg_s, hbar, rbar, btil;
};

Host make_host(const Case& cs, uint64_t seed, std::vector<uint8_t> (&bytes)[11]) {
  Host P;
  P.D = cs.D;
  P.Nrow = (P.T + kC - 1) / kC;
  P.CB = P.B * P.Nrow;
  const int64_t B = P.B, T = P.T, Hq = P.Hq, Hkv = P.Hkv, D = P.D, DD = D * D;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n01(0.0, 1.0);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  // keys: unit rows, as the operator sees them after l2norm
  P.k.resize(B * T * Hkv * D);
  for (int64_t r = 0; r < B * T * Hkv; ++r) {
    double s = 0;
    for (int64_t a = 0; a < D; ++a) s += (P.k[r * D + a] = n01(rng)) * P.k[r * D + a];
    for (int64_t a = 0; a < D; ++a) P.k[r * D + a] /= std::sqrt(s);
  }
  bytes[0] = round_to(P.k, cs.kdt);
  // log-gates: mostly mild, a few strong decays (underflowing masks must give 0, never inf / NaN)
  P.gate.resize(B * T * Hq);
  for (double& g : P.gate) g = uni(rng) < 0.03 ? -4.0 * uni(rng) : -0.15 * uni(rng);
  bytes[1] = round_to(P.gate, gka::DType::kFP32);
  // x, z, nu (nu = 0 on a few tokens: x = z = w = u nu = 0 there, the guard of spec 12.4)
  P.x.resize(B * T * Hq * D);
  P.z.resize(B * T * Hq * D);
  P.w.assign(B * T * Hq, 0.0);
  P.unu.assign(B * T * Hq, 0.0);
  std::vector<double> nu(B * T * Hq);
  for (int64_t r = 0; r < B * T * Hq; ++r) {
    nu[r] = uni(rng) < 0.05 ? 0.0 : 0.5 + 1.5 * uni(rng);
    for (int64_t a = 0; a < D; ++a) {
      P.x[r * D + a] = nu[r] > 0 ? n01(rng) : 0.0;
      P.z[r * D + a] = nu[r] > 0 ? 0.3 * n01(rng) : 0.0;
    }
  }
  bytes[2] = round_to(P.x, gka::DType::kFP32);
  bytes[3] = round_to(P.z, gka::DType::kFP32);
  for (int64_t r = 0; r < B * T * Hq; ++r) {
    const auto ra = gka::grad::ridge_adjoint(0.02, dot(D, &P.x[r * D], &P.z[r * D]), nu[r]);
    P.w[r] = ra.w;
    P.unu[r] = ra.u_nu;
  }
  bytes[4] = round_to(P.w, gka::DType::kFP32);
  bytes[5] = round_to(P.unu, gka::DType::kFP32);
  P.gla_dk.resize(B * T * Hq * D);
  for (double& e : P.gla_dk) e = n01(rng);
  bytes[6] = round_to(P.gla_dk, gka::DType::kFP32);
  P.dg_s.resize(B * T * Hq);
  for (double& e : P.dg_s) e = n01(rng);
  bytes[7] = round_to(P.dg_s, gka::DType::kFP32);
  // chunk states [CB][Hq][D][D]: Hbar from a float64 scan of the keys from a random PSD H0
  P.hbar.assign(P.CB * Hq * DD, 0.0);
  P.rbar.resize(P.CB * Hq * DD);
  P.btil.assign(P.CB * Hq * DD, 0.0);
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t h = 0; h < Hq; ++h) {
      std::vector<double> Hs(DD, 0.0), A(DD);
      for (double& e : A) e = n01(rng) / std::sqrt(static_cast<double>(D));
      for (int64_t a = 0; a < D; ++a)
        for (int64_t c = 0; c < D; ++c) Hs[a * D + c] = 0.5 * dot(D, &A[a * D], &A[c * D]);
      for (int64_t n = 0; n < P.Nrow; ++n) {
        const int64_t cidx = bb * P.Nrow + n, tb = n * kC, len = std::min<int64_t>(kC, T - tb);
        std::copy(Hs.begin(), Hs.end(), &P.hbar[(cidx * Hq + h) * DD]);
        std::vector<double> F(len);
        double acc = 0;
        for (int64_t j = 0; j < len; ++j) F[j] = acc += P.gate[(bb * T + tb + j) * Hq + h];
        for (double& e : Hs) e *= std::exp(F[len - 1]);
        for (int64_t j = 0; j < len; ++j) {
          const double* kr = &P.k[((bb * T + tb + j) * Hkv + h / (Hq / Hkv)) * D];
          const double s = std::exp(F[len - 1] - F[j]);
          for (int64_t a = 0; a < D; ++a)
            for (int64_t c = 0; c < D; ++c) Hs[a * D + c] += s * kr[a] * kr[c];
        }
      }
    }
  bytes[8] = round_to(P.hbar, cs.bf16_state ? gka::DType::kBF16 : gka::DType::kFP32);
  for (double& e : P.rbar) e = 0.1 * n01(rng);
  bytes[9] = round_to(P.rbar, gka::DType::kFP32);
  for (int64_t s = 0; s < P.CB * Hq; ++s)
    for (int64_t a = 0; a < D; ++a)
      for (int64_t c = 0; c <= a; ++c) P.btil[s * DD + a * D + c] = P.btil[s * DD + c * D + a] = 0.1 * n01(rng);
  bytes[10] = round_to(P.btil, gka::DType::kFP32);
  return P;
}

struct Expected {
  std::vector<double> dk_h, df;  // [B,T,Hq,D] (= -dk_pre), [B,T,Hq]
};

Expected expected(const Host& P, bool lam) {
  const int64_t T = P.T, Hq = P.Hq, Hkv = P.Hkv, D = P.D, DD = D * D;
  Expected e;
  e.dk_h.assign(P.B * T * Hq * D, 0.0);
  e.df.assign(P.B * T * Hq, 0.0);
  for (int64_t bb = 0; bb < P.B; ++bb)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t n = 0; n < P.Nrow; ++n) {
        const int64_t cidx = bb * P.Nrow + n, tb = n * kC;
        const int len = static_cast<int>(std::min<int64_t>(kC, T - tb));
        std::vector<double> F(len), w(len), unu(len);
        std::vector<const double*> k(len), x(len), z(len);
        double acc = 0;
        for (int j = 0; j < len; ++j) {
          const int64_t tok = (bb * T + tb + j) * Hq + h;
          F[j] = acc += P.gate[tok];
          w[j] = P.w[tok];
          unu[j] = P.unu[tok];
          k[j] = &P.k[((bb * T + tb + j) * Hkv + h / (Hq / Hkv)) * D];
          x[j] = &P.x[tok * D];
          z[j] = &P.z[tok * D];
        }
        const int64_t so = (cidx * Hq + h) * DD;
        std::vector<double> dk_pre, dF;
        mirror_chunk(static_cast<int>(D), len, F, k, x, z, w.data(), unu.data(), &P.hbar[so], &P.rbar[so],
                     &P.btil[so], lam, dk_pre, dF);
        double rc = 0;
        for (int j = len - 1; j >= 0; --j) {
          const int64_t tok = (bb * T + tb + j) * Hq + h;
          e.df[tok] = -(rc += dF[j]);
          for (int64_t a = 0; a < D; ++a) e.dk_h[tok * D + a] = -dk_pre[j * D + a];
        }
      }
  return e;
}

struct Errors {
  double dk = 0, df = 0, dg = 0;
};

template <int D, class TState>
Errors run_case(const Case& cs, uint64_t seed) {
  using gka::DType;
  using gka::TokenTensor;
  std::vector<uint8_t> bytes[11];
  const Host P = make_host(cs, seed, bytes);
  const Expected ex = expected(P, cs.lam);
  const int64_t T = P.T, Hq = P.Hq, Hkv = P.Hkv;
  DevBuf dK, dGate, dX, dZ, dW, dUnu, dDk, dDgs, dH, dR, dBt;
  upload(dK, bytes[0]);
  upload(dGate, bytes[1]);
  upload(dX, bytes[2]);
  upload(dZ, bytes[3]);
  upload(dW, bytes[4]);
  upload(dUnu, bytes[5]);
  upload(dDk, bytes[6]);
  upload(dDgs, bytes[7]);
  upload(dH, bytes[8]);
  upload(dR, bytes[9]);
  upload(dBt, bytes[10]);
  const size_t ntok = static_cast<size_t>(P.B * T * Hq);
  DevBuf dDg(ntok * 4), dDf(ntok * 4);
  REQUIRE(dDg.p != nullptr);
  REQUIRE(dDf.p != nullptr);

  gka::kernels::BackwardParams p;
  p.geo.batch = P.B;
  p.geo.seqlen = T;
  p.geo.chunk = kC;
  p.geo.num_seqs = P.B;
  p.geo.chunk_bound = P.CB;
  p.heads_q = Hq;
  p.group = Hq / Hkv;
  p.k = TokenTensor::contiguous(dK.p, cs.kdt, T, Hkv, D);
  p.x = TokenTensor::contiguous(dX.p, DType::kFP32, T, Hq, D);
  p.gate_h = gka::gating::Gate{static_cast<const float*>(dGate.p), T * Hq, Hq, 1};
  p.f_given = cs.f_given;
  p.bp_lambda = cs.lam;
  p.states_h = dH.p;
  p.ws.z = TokenTensor::contiguous(dZ.p, DType::kFP32, T, Hq, D);
  p.ws.dk = TokenTensor::contiguous(dDk.p, DType::kFP32, T, Hq, D);
  p.ws.w = TokenTensor::contiguous(dW.p, DType::kFP32, T, Hq, 1);
  p.ws.unu = TokenTensor::contiguous(dUnu.p, DType::kFP32, T, Hq, 1);
  p.ws.dg_s = TokenTensor::contiguous(dDgs.p, DType::kFP32, T, Hq, 1);
  p.ws.r_end = static_cast<float*>(dR.p);
  p.ws.b_end = cs.lam ? static_cast<float*>(dBt.p) : nullptr;  // absent without bp_lambda
  p.dg = TokenTensor::contiguous(dDg.p, DType::kFP32, T, Hq, 1);
  if (cs.f_given) p.df = TokenTensor::contiguous(dDf.p, DType::kFP32, T, Hq, 1);

  constexpr int kSmem = gka::kernels::BwdCovSmem<D>::kBytes;
  CUDA_OK(cudaFuncSetAttribute(gka::kernels::bwd_cov_kernel<D, TState>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               kSmem));
  auto launch = [&]() {
    CUDA_OK(cudaMemcpy(dDk.p, bytes[6].data(), bytes[6].size(), cudaMemcpyHostToDevice));  // fresh GLA part
    CUDA_OK(cudaMemset(dDg.p, 0xff, dDg.bytes));  // NaN poison
    CUDA_OK(cudaMemset(dDf.p, 0xff, dDf.bytes));
    gka::kernels::bwd_cov_kernel<D, TState>
        <<<dim3(static_cast<unsigned>(P.CB), static_cast<unsigned>(Hq)), gka::kernels::kBwdCovThreads, kSmem>>>(p);
    CUDA_OK(cudaGetLastError());
    CUDA_OK(cudaDeviceSynchronize());
    return std::vector<std::vector<float>>{download_f32(dDk), download_f32(dDg), download_f32(dDf)};
  };
  const auto first = launch();
  const auto second = launch();
  for (size_t i = 0; i < first.size(); ++i)  // deterministic, bitwise (memcmp: the poison is NaN)
    CHECK(std::memcmp(first[i].data(), second[i].data(), first[i].size() * sizeof(float)) == 0);

  // dk^H = output - GLA part (exact in double up to the fp32 rounding of the stored sum)
  std::vector<double> dk_h(first[0].size()), df(ntok), dg_minus_s(ntok);
  for (size_t i = 0; i < dk_h.size(); ++i) dk_h[i] = static_cast<double>(first[0][i]) - P.gla_dk[i];
  for (size_t i = 0; i < ntok; ++i) dg_minus_s[i] = static_cast<double>(first[1][i]) - P.dg_s[i];
  Errors e;
  e.dk = gka_test::rel_error(dk_h, ex.dk_h);
  if (cs.f_given) {
    for (size_t i = 0; i < ntok; ++i) df[i] = first[2][i];
    e.df = gka_test::rel_error(df, ex.df);
    // dg is the S part alone: copied bitwise
    e.dg = gka_test::rel_error(first[1], P.dg_s);
    CHECK(e.dg == 0.0);
  } else {
    e.dg = gka_test::rel_error(dg_minus_s, ex.df);
    e.df = e.dg;
    CHECK(gka_test::all_finite(first[1]));
    // df is not an output when f = g: the poison must survive
    bool untouched = true;
    for (float v : first[2]) untouched = untouched && std::isnan(v);
    CHECK(untouched);
  }
  std::printf("ERR| bwd_cov %-40s | dk^H %.3e | df %.3e | dg %.3e\n", cs.name().c_str(), e.dk, e.df, e.dg);
  std::fflush(stdout);
  return e;
}

// Tolerances (relative L2 against the float64 mirror on the same rounded inputs). Every operand
// that is not exactly bf16 is carried as bf16 hi + lo: |x - hi - lo| <= 2^-18 |x|, and the dropped
// lo*lo term is of the same order, so each product is within ~3 * 2^-18 = 1.1e-5 relative, plus
// fp32 accumulation over <= 128 + 64 terms (~1e-6), plus the fp32 chunk-local cumsum of the gates
// (|F| <= ~15 here: 15 * 2^-24 * 64 adds ~ 6e-5 absolute in an exponent in the worst case,
// ~5e-6 typical). dk^H and df (the same terms, plus differences of Y's column and row sums and the
// chunk-end term before a reverse cumsum): 1e-4, about 10x the per-product bound. Measured on the
// H200 (3f08273 and e4423a0, 17 configurations each, fresh seeds): dk^H <= 6.5e-6, df <= 7.0e-6.
constexpr double kTolDk = 1e-4;
constexpr double kTolDf = 1e-4;

}  // namespace

TEST_CASE("bwd_cov: host mirror of Pass D/E/F equals covariance_adjoint_chunked", "[gpu][bwd]") {
  // The oracle of the GPU test, checked where R-bar_n and B~_n come from the reverse scans of
  // Passes C and E, so the reference's own schedule applies (one sequence, D = 16, partial chunk).
  const int T = 150, D = 16, C = kC, DD = D * D;
  std::mt19937_64 rng(4242);
  std::normal_distribution<double> n01(0.0, 1.0);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::vector<double> K(T * D), X(T * D), Z(T * D), nu(T), f(T), h0(DD, 0.0);
  for (double& e : K) e = n01(rng) / 4.0;
  for (double& e : X) e = n01(rng);
  for (double& e : Z) e = 0.3 * n01(rng);
  for (double& e : nu) e = 0.5 + uni(rng);
  for (double& e : f) e = -0.15 * uni(rng);
  for (int a = 0; a < D; ++a) h0[a * D + a] = 0.3;
  for (const bool lam : {true, false}) {
    const auto chunks = gka::reference::make_chunks<double>(T, C, [&](int t) { return f[t]; });
    const int N = static_cast<int>(chunks.size());
    const auto Hbar = gka::reference::covariance_chunk_states(D, chunks, K.data(), h0.data());
    const auto ref = gka::reference::covariance_adjoint_chunked<double>(T, D, chunks, K.data(), Hbar, X.data(), Z.data(),
                                                                nu.data(), 0.02, lam, nullptr);
    std::vector<double> w(T, 0.0), unu(T, 0.0);
    if (lam)
      for (int t = 0; t < T; ++t) {
        const auto r = gka::grad::ridge_adjoint(0.02, dot(D, &Z[t * D], &X[t * D]), nu[t]);
        w[t] = r.w;
        unu[t] = r.u_nu;
      }
    // R-bar_n (Pass C) and B~_n (Pass E's state when chunk n is processed)
    std::vector<std::vector<double>> R(N), Bt(N);
    std::vector<double> Rs(DD, 0.0), Bs(DD, 0.0);
    for (int n = N - 1; n >= 0; --n) {
      const auto& c = chunks[n];
      R[n] = Rs;
      Bt[n] = Bs;
      const double dec = std::exp(c.F[c.len - 1]);
      for (double& e : Rs) e *= dec;
      for (double& e : Bs) e *= dec;
      double s2 = 0;
      for (int j = 0; j < c.len; ++j) {
        const double* zr = &Z[(c.t0 + j) * D];
        const double* xr = &X[(c.t0 + j) * D];
        for (int a = 0; a < D; ++a)
          for (int bb = 0; bb < D; ++bb) Rs[a * D + bb] += std::exp(c.F[j]) * zr[a] * xr[bb];
        s2 += std::exp(2 * c.F[j]) * w[c.t0 + j];
      }
      for (int e = 0; e < DD; ++e) Bs[e] += s2 * Hbar[n][e];
      for (int i = 0; i < c.len; ++i) {
        double bi = 0;
        for (int j = i; j < c.len; ++j) bi += std::exp(c.F[j] - c.F[i]) * std::exp(c.F[j]) * w[c.t0 + j];
        const double* kr = &K[(c.t0 + i) * D];
        for (int a = 0; a < D; ++a)
          for (int bb = 0; bb < D; ++bb) Bs[a * D + bb] += bi * kr[a] * kr[bb];
      }
    }
    std::vector<double> dk_h(T * D), df(T);
    for (int n = 0; n < N; ++n) {
      const auto& c = chunks[n];
      std::vector<const double*> k(c.len), x(c.len), z(c.len);
      for (int j = 0; j < c.len; ++j) {
        k[j] = &K[(c.t0 + j) * D];
        x[j] = &X[(c.t0 + j) * D];
        z[j] = &Z[(c.t0 + j) * D];
      }
      std::vector<double> dk_pre, dF;
      mirror_chunk(D, c.len, c.F, k, x, z, &w[c.t0], &unu[c.t0], Hbar[n].data(), R[n].data(), Bt[n].data(), lam,
                   dk_pre, dF);
      double rc = 0;
      for (int j = c.len - 1; j >= 0; --j) {
        df[c.t0 + j] = -(rc += dF[j]);
        for (int a = 0; a < D; ++a) dk_h[(c.t0 + j) * D + a] = -dk_pre[j * D + a];
      }
    }
    INFO("bp_lambda " << lam);
    CHECK(gka_test::rel_error(dk_h, ref.dk_h) < 1e-12);
    CHECK(gka_test::rel_error(df, ref.df) < 1e-12);
  }
}

TEST_CASE("bwd_cov: intra-chunk covariance adjoint against the float64 mirror", "[gpu][bwd]") {
  using gka::DType;
  // fresh inputs every run (GKA_SEED=n reproduces one); printed for reproduction
  const char* env = std::getenv("GKA_SEED");
  uint64_t seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  std::printf("bwd_cov seed %llu\n", static_cast<unsigned long long>(seed));
  for (const int D : {64, 128})
    for (const DType kdt : {DType::kBF16, DType::kFP32})
      for (const bool lam : {true, false})
        for (const bool fg : {false, true}) {
          Case cs;
          cs.D = D;
          cs.kdt = kdt;
          cs.lam = lam;
          cs.f_given = fg;
          SECTION(cs.name()) {
            const Errors e = D == 64 ? run_case<64, float>(cs, seed) : run_case<128, float>(cs, seed);
            CHECK(e.dk <= kTolDk);
            CHECK(e.df <= kTolDf);
          }
          ++seed;
        }
  Case cs;  // bf16 chunk states (ForwardArgs::chunk_state_dtype = bf16)
  cs.D = 128;
  cs.bf16_state = true;
  SECTION(cs.name()) {
    const Errors e = run_case<128, __nv_bfloat16>(cs, seed);
    CHECK(e.dk <= kTolDk);
    CHECK(e.df <= kTolDf);
  }
}

TEST_CASE("bwd_cov: time per launch at a training shape (informational)", "[gpu][bwd][perf]") {
  // B = 2, T = 4096, H_q = H_kv = 16, D = 128, bf16 K, bp_lambda: 2048 (chunk, head) programs. The
  // buffers hold a constant byte pattern (timing only; the results are not checked).
  using gka::DType;
  using gka::TokenTensor;
  constexpr int D = 128;
  const int64_t B = 2, T = 4096, H = 16, CB = B * ((T + kC - 1) / kC), ntok = B * T * H;
  DevBuf k(ntok * D * 2), x(ntok * D * 4), z(ntok * D * 4), dk(ntok * D * 4), sc(ntok * 4), dg(ntok * 4);
  DevBuf st(static_cast<size_t>(CB * H * D * D * 4) * 3);
  for (DevBuf* bf : {&k, &x, &z, &dk, &sc, &dg, &st}) {
    REQUIRE(bf->p != nullptr);
    CUDA_OK(cudaMemset(bf->p, 0x3c, bf->bytes));  // ~0.0115 in bf16 and fp32
  }
  gka::kernels::BackwardParams p;
  gka_test::dense_geometry(p, B, T, kC, H);
  p.k = TokenTensor::contiguous(k.p, DType::kBF16, T, H, D);
  p.x = TokenTensor::contiguous(x.p, DType::kFP32, T, H, D);
  p.ws.z = TokenTensor::contiguous(z.p, DType::kFP32, T, H, D);
  p.ws.dk = TokenTensor::contiguous(dk.p, DType::kFP32, T, H, D);
  p.ws.w = p.ws.unu = p.ws.dg_s = TokenTensor::contiguous(sc.p, DType::kFP32, T, H, 1);
  p.gate_h = gka::gating::Gate{static_cast<const float*>(sc.p), T * H, H, 1};
  p.dg = TokenTensor::contiguous(dg.p, DType::kFP32, T, H, 1);
  p.bp_lambda = true;
  const size_t state = static_cast<size_t>(CB * H * D * D);
  p.states_h = st.p;
  p.ws.r_end = static_cast<float*>(st.p) + state;
  p.ws.b_end = static_cast<float*>(st.p) + 2 * state;
  constexpr int kSmem = gka::kernels::BwdCovSmem<D>::kBytes;
  CUDA_OK(cudaFuncSetAttribute(gka::kernels::bwd_cov_kernel<D, float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               kSmem));
  const dim3 grid(static_cast<unsigned>(CB), static_cast<unsigned>(H));
  cudaEvent_t e0, e1;
  CUDA_OK(cudaEventCreate(&e0));
  CUDA_OK(cudaEventCreate(&e1));
  gka::kernels::bwd_cov_kernel<D, float><<<grid, gka::kernels::kBwdCovThreads, kSmem>>>(p);  // warm-up
  CUDA_OK(cudaGetLastError());
  const int reps = 20;
  CUDA_OK(cudaEventRecord(e0));
  for (int i = 0; i < reps; ++i) gka::kernels::bwd_cov_kernel<D, float><<<grid, gka::kernels::kBwdCovThreads, kSmem>>>(p);
  CUDA_OK(cudaEventRecord(e1));
  CUDA_OK(cudaEventSynchronize(e1));
  CUDA_OK(cudaGetLastError());
  float ms = 0.f;
  CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
  std::printf("PERF| bwd_cov D128 bf16 K lambda B2 T4096 H16 (%lld programs, %d B smem): %.3f ms per launch\n",
              static_cast<long long>(CB * H), kSmem, ms / reps);
  CUDA_OK(cudaEventDestroy(e0));
  CUDA_OK(cudaEventDestroy(e1));
}
