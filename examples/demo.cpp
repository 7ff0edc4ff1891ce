// gka_demo: the GKA operator end to end on a small, realistic problem.
//
//   B = 2 sequences, T = 200 tokens (three full chunks of 64 and a partial one of 8), H = 4 heads,
//   D = 64, inputs drawn like a trained layer's (spec 1.2 steps 4-7): L2-normalised q and k, k and v
//   scaled by a sigmoid gate beta, alpha = sigmoid(.), Mamba-style log-decays g (f = g).
//
// Runs the forward on the GPU when this build has the CUDA forward and a device is visible,
// otherwise the chunk-wise float64 CPU reference, says which, and checks o against the
// token-by-token (sequential) float64 reference. Exit status 1 if an error exceeds its tolerance.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gka/gka.h"
#include "gka/numeric/host_convert.h"
#include "gka/reference/reference.h"

#if defined(GKA_DEMO_CUDA) && defined(__CUDACC__) && __has_include("gka/api/forward.cuh")
#include <cuda_runtime.h>

#include "gka/api/forward.cuh"
#define GKA_DEMO_GPU 1
#else
#define GKA_DEMO_GPU 0
#endif

namespace {

constexpr int64_t B = 2, T = 200, H = 4, D = 64;
// The chunk-wise and sequential float64 programs compute the same function (spec 3 vs 2);
// they differ by rounding only.
constexpr double kTolChunkedVsSequential = 1e-10;
// The GPU forward takes bf16 inputs and accumulates in fp32 (spec 12.5; precision.md puts
// the best bf16 plans at 2e-3 .. 8e-3 on the worst head).
constexpr double kTolGpuBf16 = 2e-2;

struct Inputs {
  std::vector<double> q, k, v, alpha, g;  // [B,T,H,D] and [B,T,H]
};

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }

Inputs make_inputs(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0), third(0.0, std::sqrt(1.0 / 3.0));
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  Inputs in;
  in.q.resize(B * T * H * D);
  in.k.resize(B * T * H * D);
  in.v.resize(B * T * H * D);
  in.alpha.resize(B * T * H);
  in.g.resize(B * T * H);
  // Per head: A = exp(A_log) ~ U(0, 16), dt log-uniform in [1e-3, 0.1], dt_bias = softplus^-1(dt).
  std::vector<double> A(H), dt_bias(H);
  for (int64_t h = 0; h < H; ++h) {
    A[h] = 16.0 * uniform(rng);
    const double dt = std::max(1e-4, std::exp(std::log(1e-3) + uniform(rng) * (std::log(0.1) - std::log(1e-3))));
    dt_bias[h] = dt + std::log(-std::expm1(-dt));  // softplus^-1
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t row = (b * T + t) * H + h;
        double* q = &in.q[row * D];
        double* k = &in.k[row * D];
        double* v = &in.v[row * D];
        double nq = 0, nk = 0;
        for (int64_t i = 0; i < D; ++i) {
          q[i] = normal(rng);
          k[i] = normal(rng);
          v[i] = normal(rng);
          nq += q[i] * q[i];
          nk += k[i] * k[i];
        }
        const double beta = sigmoid(third(rng));
        for (int64_t i = 0; i < D; ++i) {
          q[i] /= std::sqrt(nq) + 1e-6;
          k[i] = k[i] / (std::sqrt(nk) + 1e-6) * (beta + 1e-6);
          v[i] *= beta + 1e-6;
        }
        in.alpha[row] = sigmoid(third(rng));
        in.g[row] = -A[h] * softplus(third(rng) + dt_bias[h]);
      }
  return in;
}

double rel_l2(const std::vector<double>& a, const std::vector<double>& ref) {
  double d = 0, r = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    d += (a[i] - ref[i]) * (a[i] - ref[i]);
    r += ref[i] * ref[i];
  }
  return r > 0 ? std::sqrt(d / r) : std::sqrt(d);
}

gka::ForwardArgs make_args(const Inputs& in, gka::DType t, const void* q, const void* k, const void* v,
                           const void* alpha, const void* g, void* o) {
  gka::ForwardArgs a;
  a.shape.batch = B;
  a.shape.seqlen = T;
  a.shape.heads_q = a.shape.heads_kv = H;
  a.shape.head_dim = D;
  a.in.q = gka::TokenTensor::contiguous(q, t, T, H, D);
  a.in.k = gka::TokenTensor::contiguous(k, t, T, H, D);
  a.in.v = gka::TokenTensor::contiguous(v, t, T, H, D);
  a.in.alpha = gka::TokenTensor::contiguous(alpha, t, T, H, 1);
  // g is fp32 on the GPU and may be fp64 on the reference.
  a.in.g = gka::TokenTensor::contiguous(g, t == gka::DType::kFP64 ? gka::DType::kFP64 : gka::DType::kFP32, T, H, 1);
  a.o = gka::TokenTensor::contiguous(o, t, T, H, D);
  (void)in;
  return a;  // options: the defaults, num_iter 30, ridge_ratio 0.02, scale D^-1/2, chunk 64
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

#if GKA_DEMO_GPU
// Returns false (and says why) when no device is usable; the caller then runs the CPU path.
bool gpu_visible(std::string* name) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return false;
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return false;
  *name = prop.name;
  return true;
}

// bf16 inputs, fp32 g; o comes back as bf16 and is widened to double.
gka::Result run_gpu(const Inputs& in, std::vector<double>* o, double* seconds) {
  auto to_bf16 = [](const std::vector<double>& x) {
    std::vector<uint16_t> r(x.size());
    for (size_t i = 0; i < x.size(); ++i) r[i] = gka::double_to_bf16_bits(x[i]);
    return r;
  };
  const std::vector<uint16_t> hq = to_bf16(in.q), hk = to_bf16(in.k), hv = to_bf16(in.v), ha = to_bf16(in.alpha);
  const std::vector<float> hg(in.g.begin(), in.g.end());
  void *dq, *dk, *dv, *da, *dg, *dout, *ws = nullptr;
  const size_t tok = hq.size() * 2, scal = ha.size() * 2;
  if (cudaMalloc(&dq, tok) || cudaMalloc(&dk, tok) || cudaMalloc(&dv, tok) || cudaMalloc(&da, scal) ||
      cudaMalloc(&dg, hg.size() * 4) || cudaMalloc(&dout, tok))
    return gka::Result(gka::Status::kErrorCuda, "cudaMalloc failed");
  cudaMemcpy(dq, hq.data(), tok, cudaMemcpyHostToDevice);
  cudaMemcpy(dk, hk.data(), tok, cudaMemcpyHostToDevice);
  cudaMemcpy(dv, hv.data(), tok, cudaMemcpyHostToDevice);
  cudaMemcpy(da, ha.data(), scal, cudaMemcpyHostToDevice);
  cudaMemcpy(dg, hg.data(), hg.size() * 4, cudaMemcpyHostToDevice);
  gka::ForwardArgs a = make_args(in, gka::DType::kBF16, dq, dk, dv, da, dg, dout);
  const size_t ws_bytes = gka::forward_workspace_size(a);
  if (ws_bytes && cudaMalloc(&ws, ws_bytes)) return gka::Result(gka::Status::kErrorCuda, "cudaMalloc (workspace) failed");
  gka::Result r = gka::forward(a, ws, ws_bytes, cudaStream_t{});  // warm-up and check
  if (r.ok()) {
    cudaDeviceSynchronize();
    const auto t0 = std::chrono::steady_clock::now();
    r = gka::forward(a, ws, ws_bytes, cudaStream_t{});
    cudaDeviceSynchronize();
    *seconds = seconds_since(t0);
  }
  std::vector<uint16_t> ho(hq.size());
  cudaMemcpy(ho.data(), dout, tok, cudaMemcpyDeviceToHost);
  for (void* p : {dq, dk, dv, da, dg, dout, ws}) cudaFree(p);
  o->resize(ho.size());
  for (size_t i = 0; i < ho.size(); ++i) (*o)[i] = gka::bf16_bits_to_float(ho[i]);
  return r;
}
#endif

}  // namespace

int main() {
  const Inputs in = make_inputs(2025);
  std::printf("gka %s demo: GKA forward, B=%lld T=%lld H=%lld D=%lld (chunk 64: last chunk holds %lld tokens), "
              "num_iter=30 ridge_ratio=0.02 scale=D^-1/2\n",
              GKA_VERSION_STRING, static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(H),
              static_cast<long long>(D), static_cast<long long>(T % 64));
  std::printf("  q, k, v, o [B,T,H,D] = [%lld,%lld,%lld,%lld]; alpha, g [B,T,H]; f = g\n", static_cast<long long>(B),
              static_cast<long long>(T), static_cast<long long>(H), static_cast<long long>(D));

  // The oracle: token by token in float64 (spec 2.2-2.3).
  std::vector<double> o_seq(in.q.size()), o_chunk(in.q.size());
  gka::ForwardArgs seq_args = make_args(in, gka::DType::kFP64, in.q.data(), in.k.data(), in.v.data(),
                                        in.alpha.data(), in.g.data(), o_seq.data());
  auto t0 = std::chrono::steady_clock::now();
  gka::Result r = gka::reference::forward<double>(seq_args);
  const double t_seq = seconds_since(t0);
  if (!r.ok()) {
    std::fprintf(stderr, "sequential reference failed: %s\n", r.what().c_str());
    return 1;
  }

  bool ok = true;
  std::string backend = "CPU float64 reference, chunk-wise (spec 3)";
#if GKA_DEMO_GPU
  std::string device;
  if (gpu_visible(&device)) {
    backend = "GPU (" + device + "), bf16 inputs";
  } else {
    backend += " (no CUDA device visible)";
  }
#elif defined(GKA_DEMO_CUDA)
  backend += " (the GPU forward is not in this build yet)";
#else
  backend += " (built without CUDA)";
#endif
  std::printf("backend: %s\n", backend.c_str());

  // The chunk-wise float64 reference, the program the GPU kernels mirror.
  gka::ForwardArgs chunk_args = make_args(in, gka::DType::kFP64, in.q.data(), in.k.data(), in.v.data(),
                                          in.alpha.data(), in.g.data(), o_chunk.data());
  gka::reference::ReferenceOptions chunked;
  chunked.schedule = gka::reference::Schedule::kChunked;
  t0 = std::chrono::steady_clock::now();
  r = gka::reference::forward<double>(chunk_args, chunked);
  const double t_chunk = seconds_since(t0);
  if (!r.ok()) {
    std::fprintf(stderr, "chunk-wise reference failed: %s\n", r.what().c_str());
    return 1;
  }
  const double e_chunk = rel_l2(o_chunk, o_seq);
  std::printf("  sequential float64 reference: %8.1f ms\n", 1e3 * t_seq);
  std::printf("  chunk-wise float64 reference: %8.1f ms   rel. L2 error of o vs sequential: %.2e (tolerance %.0e) %s\n",
              1e3 * t_chunk, e_chunk, kTolChunkedVsSequential, e_chunk <= kTolChunkedVsSequential ? "ok" : "FAIL");
  ok = ok && e_chunk <= kTolChunkedVsSequential;

#if GKA_DEMO_GPU
  if (!device.empty()) {
    std::vector<double> o_gpu;
    double t_gpu = 0;
    r = run_gpu(in, &o_gpu, &t_gpu);
    if (!r.ok()) {
      std::fprintf(stderr, "GPU forward failed: %s\n", r.what().c_str());
      return 1;
    }
    const double e_gpu = rel_l2(o_gpu, o_seq);
    std::printf("  GPU forward (bf16 in/out):    %8.3f ms   rel. L2 error of o vs sequential: %.2e (tolerance %.0e) %s\n",
                1e3 * t_gpu, e_gpu, kTolGpuBf16, e_gpu <= kTolGpuBf16 ? "ok" : "FAIL");
    ok = ok && e_gpu <= kTolGpuBf16;
  }
#endif
  double norm = 0;
  for (double x : o_seq) norm += x * x;
  std::printf("  ||o|| = %.6f, o[0,0,0,0:4] = [%.6f %.6f %.6f %.6f]\n", std::sqrt(norm), o_seq[0], o_seq[1], o_seq[2], o_seq[3]);
  std::printf("%s\n", ok ? "demo: PASS" : "demo: FAIL (error above tolerance)");
  return ok ? 0 : 1;
}
