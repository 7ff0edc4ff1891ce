// bench/bench_decode.cu: one gka::decode step as a serving engine runs it: N sequences x 16 heads,
// D = 128, bf16 q/k/v/alpha, fp32 gates, r = 30, fp32 pool (and a bf16 S pool), m = 1 or 4 tokens.
//
// Timing: the step is captured once in a CUDA graph and replayed. Each sample is one replay timed
// with CUDA events; before it, outside the events, a 256 MiB memset evicts the pool from the 50 MiB
// L2 (a real model runs other layers between two steps of one layer, so the states come from DRAM).
// Counters (medians over the samples): us (cold L2, the headline), us_warm (no eviction: the pool
// may be L2-resident at small N), us_graph10 (a graph of 10 steps, per step, cold before the
// graph: launch overhead amortised), GBps (minimum state traffic of spec 5 / us: H read + write in
// fp32, S read + write in the pool's dtype, i.e. 256 KiB per (sequence, head) with an fp32 S
// pool), frac_4200 (GBps / 4200, the H200's measured copy ceiling).
// BM_decode_budget/N/m/min_blocks forces the kernel's register budget (1: 108 registers, one
// CTA per SM; 2: 64 registers, two CTAs per SM) to show what the automatic choice picks between.
// BM_decode_split/N/m/split: split 1 = a cluster of two CTAs per (sequence, head) (the solver and
// the state CTA; the automatic choice when 2 N H <= SMs), -1 = one CTA.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gka/gka.cuh"

namespace {

#define BENCH_CUDA(expr)                                                               \
  do {                                                                                 \
    const cudaError_t e_ = (expr);                                                     \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s: %s\n", #expr, cudaGetErrorString(e_));                 \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

constexpr int kHeads = 16, kD = 128;
constexpr double kCeilingGBps = 4200.0;

__device__ float hash01(uint64_t i, uint64_t seed) {
  uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return ((z >> 40) + 0.5f) / 16777216.f;
}
// kind 0: q/k entries ~ unit-norm vectors; 1: v ~ N(0,1)-ish; 2: alpha in (0,1)
__global__ void fill_bf16(__nv_bfloat16* x, int64_t n, uint64_t seed, int kind) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float u = hash01(i, seed);
    const float v = kind == 0 ? (u - 0.5f) * 3.4641f / sqrtf((float)kD) : kind == 1 ? (u - 0.5f) * 3.4641f : u;
    x[i] = __float2bfloat16(v);
  }
}
__global__ void fill_gate(float* g, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    g[i] = -0.05f * (0.5f + hash01(i, seed));
}
// States of a symmetric PSD-like covariance (diagonal-dominant) and a small S, per (slot, head).
template <class T>
__global__ void fill_state(T* s, int64_t n, uint64_t seed, bool covariance) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = (i / kD) % kD, c = i % kD;
    float v;
    if (covariance) v = r == c ? 1.f : 0.01f * (hash01((i / (kD * kD)) * kD * kD + std::min(r, c) * kD + std::max(r, c), seed) - 0.5f);
    else v = 0.1f * (hash01(i, seed) - 0.5f);
    s[i] = static_cast<T>(v);
  }
}

struct Problem {
  int64_t N, m;
  bool s_bf16;
  void *q = nullptr, *k = nullptr, *v = nullptr, *alpha = nullptr, *g = nullptr, *o = nullptr;
  void *ph = nullptr, *ps = nullptr, *slots = nullptr;
  gka::DecodeArgs args;

  Problem(int64_t n, int64_t m_, bool sb) : N(n), m(m_), s_bf16(sb) {
    const int64_t tok = N * m * kHeads;
    BENCH_CUDA(cudaMalloc(&q, tok * kD * 2));
    BENCH_CUDA(cudaMalloc(&k, tok * kD * 2));
    BENCH_CUDA(cudaMalloc(&v, tok * kD * 2));
    BENCH_CUDA(cudaMalloc(&alpha, tok * 2));
    BENCH_CUDA(cudaMalloc(&g, tok * 4));
    BENCH_CUDA(cudaMalloc(&o, tok * kD * 2));
    const int64_t st = N * kHeads * kD * kD;
    BENCH_CUDA(cudaMalloc(&ph, st * 4));
    BENCH_CUDA(cudaMalloc(&ps, st * (sb ? 2 : 4)));
    BENCH_CUDA(cudaMalloc(&slots, N * 4));
    fill_bf16<<<256, 256>>>(static_cast<__nv_bfloat16*>(q), tok * kD, 1, 0);
    fill_bf16<<<256, 256>>>(static_cast<__nv_bfloat16*>(k), tok * kD, 2, 0);
    fill_bf16<<<256, 256>>>(static_cast<__nv_bfloat16*>(v), tok * kD, 3, 1);
    fill_bf16<<<256, 256>>>(static_cast<__nv_bfloat16*>(alpha), tok, 4, 2);
    fill_gate<<<256, 256>>>(static_cast<float*>(g), tok, 5);
    fill_state<float><<<1024, 256>>>(static_cast<float*>(ph), st, 6, true);
    if (sb) fill_state<__nv_bfloat16><<<1024, 256>>>(static_cast<__nv_bfloat16*>(ps), st, 7, false);
    else fill_state<float><<<1024, 256>>>(static_cast<float*>(ps), st, 7, false);
    std::vector<int32_t> sl(N);
    for (int64_t i = 0; i < N; ++i) sl[i] = static_cast<int32_t>(i);  // read = write slot, as a serving engine
    BENCH_CUDA(cudaMemcpy(slots, sl.data(), N * 4, cudaMemcpyHostToDevice));
    BENCH_CUDA(cudaDeviceSynchronize());
    gka::DecodeArgs& a = args;
    a.shape.batch = N;
    a.shape.seqlen = m;
    a.shape.heads_q = a.shape.heads_kv = kHeads;
    a.shape.head_dim = kD;
    a.in.q = gka::TokenTensor::contiguous(q, gka::DType::kBF16, m, kHeads, kD);
    a.in.k = gka::TokenTensor::contiguous(k, gka::DType::kBF16, m, kHeads, kD);
    a.in.v = gka::TokenTensor::contiguous(v, gka::DType::kBF16, m, kHeads, kD);
    a.in.alpha = gka::TokenTensor::contiguous(alpha, gka::DType::kBF16, m, kHeads, 1);
    a.in.g = gka::TokenTensor::contiguous(g, gka::DType::kFP32, m, kHeads, 1);
    a.o = gka::TokenTensor::contiguous(o, gka::DType::kBF16, m, kHeads, kD);
    a.pool.h = gka::StateTensor::contiguous(ph, gka::DType::kFP32, kHeads, kD);
    a.pool.s = gka::StateTensor::contiguous(ps, sb ? gka::DType::kBF16 : gka::DType::kFP32, kHeads, kD);
    a.pool.num_slots = N;
    a.pool.read_slots = slots;
  }
  ~Problem() {
    for (void* p : {q, k, v, alpha, g, o, ph, ps, slots}) cudaFree(p);
  }
  double state_bytes() const { return double(N) * kHeads * kD * kD * (2 * 4 + 2 * (s_bf16 ? 2 : 4)); }
};

struct Flush {
  void* p = nullptr;
  size_t bytes = size_t(256) << 20;
  Flush() { BENCH_CUDA(cudaMalloc(&p, bytes)); }
  ~Flush() { cudaFree(p); }
  void run(cudaStream_t s) { BENCH_CUDA(cudaMemsetAsync(p, 0, bytes, s)); }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

cudaGraphExec_t capture(const gka::DecodeArgs& a, int steps, int min_blocks, int split, cudaStream_t s) {
  cudaGraph_t graph;
  BENCH_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < steps; ++i) {
    const gka::Result r = gka::detail::decode_impl(a, s, min_blocks, split);
    if (!r.ok()) {
      std::fprintf(stderr, "decode: %s\n", r.what());
      std::exit(1);
    }
  }
  BENCH_CUDA(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec;
  BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  BENCH_CUDA(cudaGraphDestroy(graph));
  return exec;
}

// Median event time of `samples` replays of exec, optionally evicting L2 before each.
double time_graph(cudaGraphExec_t exec, cudaStream_t s, Flush* flush, int samples) {
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  for (int i = 0; i < 5; ++i) BENCH_CUDA(cudaGraphLaunch(exec, s));  // warm-up
  std::vector<double> t;
  for (int i = 0; i < samples; ++i) {
    if (flush) flush->run(s);
    BENCH_CUDA(cudaEventRecord(e0, s));
    BENCH_CUDA(cudaGraphLaunch(exec, s));
    BENCH_CUDA(cudaEventRecord(e1, s));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms * 1e3);
  }
  BENCH_CUDA(cudaEventDestroy(e0));
  BENCH_CUDA(cudaEventDestroy(e1));
  return median(t);
}

void run(benchmark::State& state, int64_t N, int64_t m, bool s_bf16, int min_blocks, int split = 0) {
  Problem P(N, m, s_bf16);
  Flush flush;
  cudaStream_t s;
  BENCH_CUDA(cudaStreamCreate(&s));
  cudaGraphExec_t one = capture(P.args, 1, min_blocks, split, s), ten = capture(P.args, 10, min_blocks, split, s);
  double us = 0;
  for (auto _ : state) {
    us = time_graph(one, s, &flush, 100);
    state.SetIterationTime(us * 1e-6);
  }
  const double warm = time_graph(one, s, nullptr, 100);
  const double g10 = time_graph(ten, s, &flush, 30) / 10.0;
  const double gbps = P.state_bytes() / (us * 1e-6) / 1e9;
  state.counters["us"] = us;
  state.counters["us_warm"] = warm;
  state.counters["us_graph10"] = g10;
  state.counters["GBps"] = gbps;
  state.counters["frac_4200"] = gbps / kCeilingGBps;
  state.counters["MiB_state"] = P.state_bytes() / (1 << 20);
  BENCH_CUDA(cudaGraphExecDestroy(one));
  BENCH_CUDA(cudaGraphExecDestroy(ten));
  BENCH_CUDA(cudaStreamDestroy(s));
}

void BM_decode(benchmark::State& st) { run(st, st.range(0), st.range(1), false, 0); }
void BM_decode_bf16_S(benchmark::State& st) { run(st, st.range(0), st.range(1), true, 0); }
void BM_decode_budget(benchmark::State& st) { run(st, st.range(0), st.range(1), false, static_cast<int>(st.range(2)), -1); }
void BM_decode_split(benchmark::State& st) { run(st, st.range(0), st.range(1), false, 0, static_cast<int>(st.range(2))); }

}  // namespace

BENCHMARK(BM_decode)->ArgsProduct({{1, 16, 64, 256}, {1, 4}})->ArgNames({"N", "m"})->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_decode_bf16_S)->Args({64, 1})->Args({256, 1})->ArgNames({"N", "m"})->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_decode_split)->ArgsProduct({{1, 2, 4}, {1, 4}, {-1, 1}})->ArgNames({"N", "m", "split"})->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_decode_budget)->ArgsProduct({{1, 16, 64, 256}, {1}, {1, 2}})->ArgNames({"N", "m", "min_blocks"})->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
