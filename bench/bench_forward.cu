// bench/bench_forward.cu: the CUDA forward at the issue's shape: B*T = 65,536 tokens per call,
// H = 16, D = 128, bf16, r = 30, C = 64, for T = 2048, 8192, 32768.
//
// Timing: CUDA events around each call (manual time), after 3 warm-up calls per repetition. The
// events include the host-side validation and launch of the call (a few us; the stream is idle
// when e0 is recorded). A repetition is the mean of 10 calls; Google Benchmark reports the mean,
// median, stddev, cv and min over the repetitions. L2: the code rotates over `sets` input copies
// totalling > 200 MB, but at this shape one set (q, k, v: 3 x 268 MB) already exceeds that, so
// sets == 1 and nothing rotates; none is needed, since one set plus the 2 GiB workspace is many
// times the H200's L2 and a call cannot find its inputs there from the previous call. Counters: ms, tokens/s, TFLOP/s by the spec 9
// count (2.19 MFLOP per token per head at r = 30, D = 128, C = 64) and the fraction of 790 TFLOP/s, the
// bf16 throughput of a large GEMM on the H200 measured for the design notes (hopper-design.md; the
// datasheet's dense peak is 989).
// scan_ms / solve_ms: mean time of the chunk-state scan and of the fused nu + solve + read-out
// kernel, from an event recorded between them (gka::detail::ForwardProbe).
// BM_forward_bf16_states: the same with ForwardArgs::chunk_state_dtype = bf16 (half the H-bar /
// S-bar workspace and its write + read traffic).
// BM_forward_backward: one training step of the layer: gka::forward (saving x in fp32 and nu, its
// workspace kept) then gka::backward (reading the saved chunk states, bp_lambda on, incoming do):
// ms of the pair, fwd_ms / bwd_ms from an event between them, TFLOP/s by spec 9's forward +
// backward count (4.83 MFLOP per token per head at r = 30); b*_ms: the backward's kernels
// (gka::detail::BackwardProbe events).
// BM_forward_backward_bf16_states: the same with bf16 chunk states (the forward's H-bar / S-bar and
// the backward's per-chunk R-bar / S^ / B~: the bf16 plan of docs/gpu-backward.md).
// BM_forward_backward_overlap: BackwardArgs::overlap_stream set (the R-bar / B~ scans on the second
// stream beside the S^ scan and the GLA kernel; no stage counters), fp32 or bf16 chunk states.
// BM_forward_backward_segments: bf16 chunk states, BackwardArgs::scan_segments forced to 1 .. 16
// runs per sequence (the reverse scans' segment parallelism), one stream or two.
// BM_forward_backward_2heads: the same 65,536 tokens with 2 heads, segments 1 or automatic.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gka/gka.cuh"

namespace {

// Spec 9, forward per token and head: H scan (2D^2 + D^2/C), norms (2D^2 + 2CD + 2C^2), r Chebyshev
// rounds r (2D^2 + 4CD + C + 9D), alpha-mix 3D, S scan (2D^2 + D^2/C), read-out (2D^2 + 4CD).
constexpr double forward_flop_per_token_head(int r, double D, double C) {
  return (2 * D * D + D * D / C) + (2 * D * D + 2 * C * D + 2 * C * C) + r * (2 * D * D + 4 * C * D + C + 9 * D) +
         3 * D + (2 * D * D + D * D / C) + (2 * D * D + 4 * C * D);
}
// Spec 9, backward: the adjoint solve (the forward's r rounds) plus 636,544 FLOP of recomputed
// scans, reverse scans, intra-chunk products, the cross-chunk lambda pass and the GLA adjoint (the
// table's B1, B3-B10 at D = 128, C = 64).
constexpr double backward_flop_per_token_head(int r, double D, double C) {
  return r * (2 * D * D + 4 * C * D + C + 9 * D) + 636544.0 * (D * D) / (128.0 * 128.0);
}
constexpr double kCeilingTflops = 790.0;

#define BENCH_CUDA(expr)                                                               \
  do {                                                                                 \
    const cudaError_t e_ = (expr);                                                     \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s: %s\n", #expr, cudaGetErrorString(e_));                 \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

__global__ void fill_kernel(__nv_bfloat16* x, int64_t n, int64_t D, uint64_t seed, int kind) {
  // kind 0: unit-norm-ish vectors (q, k), 1: N(0,1)-ish (v), 2: alpha in (0,1)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = ((z >> 40) + 0.5f) / 16777216.f;  // (0,1)
    float v;
    if (kind == 0) v = (u - 0.5f) * 3.4641f / sqrtf((float)D) * 0.7f;
    else if (kind == 1) v = (u - 0.5f) * 3.4641f * 0.7f;
    else v = u;
    x[i] = __float2bfloat16(v);
  }
}
__global__ void fill_gate_kernel(float* g, int64_t n, int64_t H, uint64_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t z = (i + 7) * 0x9E3779B97F4A7C15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z ^= z >> 31;
    const float u = ((z >> 40) + 0.5f) / 16777216.f;
    const int64_t h = i % H;
    const float A = 0.5f + 15.f * (float)(h + 1) / (float)(H + 1);  // A in (0.5, 15.5)
    const float dt = expf(logf(1e-3f) + (logf(0.1f) - logf(1e-3f)) * (float)h / (float)H);
    g[i] = -A * dt * (0.5f + u);  // ~ -A softplus(a + dt_bias)
  }
}

struct Inputs {
  void *q, *k, *v, *alpha, *g, *o;
};

void run_forward(benchmark::State& state, int64_t T, int num_iter, gka::DType state_dtype = gka::DType::kFP32) {
  const int64_t tokens = 65536, B = tokens / T, H = 16, D = 128;
  const size_t vec = static_cast<size_t>(B * T * H * D), scal = static_cast<size_t>(B * T * H);
  const size_t bytes_per_set = vec * 2 * 3 + scal * 2 + scal * 4;
  const int sets = static_cast<int>((200ull << 20) / bytes_per_set + 1);  // > 2x L2
  std::vector<Inputs> in(sets);
  for (int s = 0; s < sets; ++s) {
    BENCH_CUDA(cudaMalloc(&in[s].q, vec * 2));
    BENCH_CUDA(cudaMalloc(&in[s].k, vec * 2));
    BENCH_CUDA(cudaMalloc(&in[s].v, vec * 2));
    BENCH_CUDA(cudaMalloc(&in[s].alpha, scal * 2));
    BENCH_CUDA(cudaMalloc(&in[s].g, scal * 4));
    fill_kernel<<<1024, 256>>>((__nv_bfloat16*)in[s].q, vec, D, 11 + s, 0);
    fill_kernel<<<1024, 256>>>((__nv_bfloat16*)in[s].k, vec, D, 23 + s, 0);
    fill_kernel<<<1024, 256>>>((__nv_bfloat16*)in[s].v, vec, D, 37 + s, 1);
    fill_kernel<<<1024, 256>>>((__nv_bfloat16*)in[s].alpha, scal, 1, 41 + s, 2);
    fill_gate_kernel<<<1024, 256>>>((float*)in[s].g, scal, H, 53 + s);
    BENCH_CUDA(cudaGetLastError());
  }
  void* o;
  BENCH_CUDA(cudaMalloc(&o, vec * 2));
  auto args_for = [&](int s) {
    gka::ForwardArgs a;
    a.shape.batch = B;
    a.shape.seqlen = T;
    a.shape.heads_q = H;
    a.shape.heads_kv = H;
    a.shape.head_dim = D;
    a.options.num_iter = num_iter;
    a.options.chunk_size = 64;
    a.in.q = gka::TokenTensor::contiguous(in[s].q, gka::DType::kBF16, T, H, D);
    a.in.k = gka::TokenTensor::contiguous(in[s].k, gka::DType::kBF16, T, H, D);
    a.in.v = gka::TokenTensor::contiguous(in[s].v, gka::DType::kBF16, T, H, D);
    a.in.alpha = gka::TokenTensor::contiguous(in[s].alpha, gka::DType::kBF16, T, H, 1);
    a.in.g = gka::TokenTensor::contiguous(in[s].g, gka::DType::kFP32, T, H, 1);
    a.o = gka::TokenTensor::contiguous(o, gka::DType::kBF16, T, H, D);
    a.chunk_state_dtype = state_dtype;
    return a;
  };
  const size_t ws_bytes = gka::forward_workspace_size(args_for(0));
  void* ws;
  BENCH_CUDA(cudaMalloc(&ws, ws_bytes));
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreate(&stream));
  cudaEvent_t e0, e1, em;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  BENCH_CUDA(cudaEventCreate(&em));
  gka::detail::ForwardProbe probe;
  probe.after_scan = em;
  double scan_ms = 0, solve_ms = 0;
  {
    const gka::Result ci = gka::can_implement(args_for(0), 0);
    if (!ci.ok()) { state.SkipWithError(ci.what().c_str()); return; }
  }
  for (int w = 0; w < 3; ++w) {  // warm-up
    const gka::Result r = gka::forward(args_for(w % sets), ws, ws_bytes, stream);
    if (!r.ok()) { state.SkipWithError(r.what().c_str()); return; }
  }
  BENCH_CUDA(cudaStreamSynchronize(stream));
  int it = 0;
  for (auto _ : state) {
    const gka::ForwardArgs a = args_for(it++ % sets);
    BENCH_CUDA(cudaEventRecord(e0, stream));
    const gka::Result r = gka::detail::forward_impl(a, ws, ws_bytes, stream, &probe);
    BENCH_CUDA(cudaEventRecord(e1, stream));
    BENCH_CUDA(cudaEventSynchronize(e1));
    if (!r.ok()) { state.SkipWithError(r.what().c_str()); break; }
    float ms = 0, ms_scan = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    BENCH_CUDA(cudaEventElapsedTime(&ms_scan, e0, em));
    scan_ms += ms_scan;
    solve_ms += ms - ms_scan;
    state.SetIterationTime(ms * 1e-3);
  }
  const double flop = forward_flop_per_token_head(num_iter, D, 64) * static_cast<double>(tokens) * H;
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["TFLOP/s"] = benchmark::Counter(flop * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["frac_790"] = benchmark::Counter(flop * 1e-12 / kCeilingTflops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["B"] = static_cast<double>(B);
  const double n_it = it > 0 ? static_cast<double>(it) : 1.0;
  state.counters["scan_ms"] = scan_ms / n_it;
  state.counters["solve_ms"] = solve_ms / n_it;
  BENCH_CUDA(cudaStreamDestroy(stream));
  BENCH_CUDA(cudaEventDestroy(e0));
  BENCH_CUDA(cudaEventDestroy(e1));
  BENCH_CUDA(cudaEventDestroy(em));
  BENCH_CUDA(cudaFree(ws));
  BENCH_CUDA(cudaFree(o));
  for (auto& s : in)
    for (void* p : {s.q, s.k, s.v, s.alpha, s.g}) BENCH_CUDA(cudaFree(p));
}

void BM_forward(benchmark::State& state) { run_forward(state, state.range(0), 30); }

void run_forward_backward(benchmark::State& state, gka::DType state_dtype, bool overlap = false, int segments = 0,
                          int64_t H = 16) {
  const int64_t tokens = 65536, T = state.range(0), B = tokens / T, D = 128;
  const int num_iter = 30;
  const size_t vec = static_cast<size_t>(B * T * H * D), scal = static_cast<size_t>(B * T * H);
  void *q, *k, *v, *alpha, *g, *o, *x, *nu, *d_o, *dq, *dk, *dv, *dalpha, *dg;
  for (void** p : {&q, &k, &v, &o, &d_o, &dq, &dk, &dv}) BENCH_CUDA(cudaMalloc(p, vec * 2));
  BENCH_CUDA(cudaMalloc(&x, vec * 4));
  BENCH_CUDA(cudaMalloc(&alpha, scal * 2));
  BENCH_CUDA(cudaMalloc(&dalpha, scal * 2));
  for (void** p : {&g, &nu, &dg}) BENCH_CUDA(cudaMalloc(p, scal * 4));
  fill_kernel<<<1024, 256>>>((__nv_bfloat16*)q, vec, D, 11, 0);
  fill_kernel<<<1024, 256>>>((__nv_bfloat16*)k, vec, D, 23, 0);
  fill_kernel<<<1024, 256>>>((__nv_bfloat16*)v, vec, D, 37, 1);
  fill_kernel<<<1024, 256>>>((__nv_bfloat16*)d_o, vec, D, 59, 1);
  fill_kernel<<<1024, 256>>>((__nv_bfloat16*)alpha, scal, 1, 41, 2);
  fill_gate_kernel<<<1024, 256>>>((float*)g, scal, H, 53);
  BENCH_CUDA(cudaGetLastError());
  auto tt = [&](void* p, gka::DType t, int64_t w) { return gka::TokenTensor::contiguous(p, t, T, H, w); };
  gka::ForwardArgs fa;
  fa.shape.batch = B;
  fa.shape.seqlen = T;
  fa.shape.heads_q = fa.shape.heads_kv = H;
  fa.shape.head_dim = D;
  fa.options.num_iter = num_iter;
  fa.in.q = tt(q, gka::DType::kBF16, D);
  fa.in.k = tt(k, gka::DType::kBF16, D);
  fa.in.v = tt(v, gka::DType::kBF16, D);
  fa.in.alpha = tt(alpha, gka::DType::kBF16, 1);
  fa.in.g = tt(g, gka::DType::kFP32, 1);
  fa.o = tt(o, gka::DType::kBF16, D);
  fa.x = tt(x, gka::DType::kFP32, D);
  fa.nu = tt(nu, gka::DType::kFP32, 1);
  fa.chunk_state_dtype = state_dtype;
  gka::BackwardArgs ba;
  ba.shape = fa.shape;
  ba.in = fa.in;
  ba.options = fa.options;
  ba.x = fa.x;
  ba.nu = fa.nu;
  ba.d_o = tt(d_o, gka::DType::kBF16, D);
  ba.dq = tt(dq, gka::DType::kBF16, D);
  ba.dk = tt(dk, gka::DType::kBF16, D);
  ba.dv = tt(dv, gka::DType::kBF16, D);
  ba.dalpha = tt(dalpha, gka::DType::kBF16, 1);
  ba.dg = tt(dg, gka::DType::kFP32, 1);
  const size_t fws_bytes = gka::forward_workspace_size(fa);
  void *fws, *bws;
  BENCH_CUDA(cudaMalloc(&fws, fws_bytes));
  ba.forward_workspace = fws;
  ba.chunk_state_dtype = state_dtype;
  ba.scan_segments = segments;
  const size_t bws_bytes = gka::backward_workspace_size(ba);
  BENCH_CUDA(cudaMalloc(&bws, bws_bytes));
  cudaStream_t stream, side = nullptr;
  BENCH_CUDA(cudaStreamCreate(&stream));
  if (overlap) {
    BENCH_CUDA(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    ba.overlap_stream = side;
  }
  cudaEvent_t e0, e1, em;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  BENCH_CUDA(cudaEventCreate(&em));
  // per-kernel breakdown of the backward: prologue (chunk table), solve, reverse scans, GLA, cov, finish
  constexpr int kStages = 5;
  cudaEvent_t ev[kStages];
  for (cudaEvent_t& e : ev) BENCH_CUDA(cudaEventCreate(&e));
  gka::detail::BackwardProbe probe;
  probe.after_prologue = ev[0];
  probe.after_solve = ev[1];
  probe.after_rscan = ev[2];
  probe.after_gla = ev[3];
  probe.after_cov = ev[4];
  double stage_ms[kStages + 1] = {};
  {
    const gka::Result ci = gka::can_implement(ba, 0);
    if (!ci.ok()) { state.SkipWithError(ci.what().c_str()); return; }
  }
  auto step = [&]() {
    gka::Result r = gka::forward(fa, fws, fws_bytes, stream);
    if (r.ok()) BENCH_CUDA(cudaEventRecord(em, stream));
    // stage events would serialise the two chains: none with overlap
    if (r.ok()) r = gka::detail::backward_impl(ba, bws, bws_bytes, stream, overlap ? nullptr : &probe);
    return r;
  };
  for (int w = 0; w < 2; ++w) {
    const gka::Result r = step();
    if (!r.ok()) { state.SkipWithError(r.what().c_str()); return; }
  }
  BENCH_CUDA(cudaStreamSynchronize(stream));
  double fwd_ms = 0, bwd_ms = 0;
  int it = 0;
  for (auto _ : state) {
    BENCH_CUDA(cudaEventRecord(e0, stream));
    const gka::Result r = step();
    BENCH_CUDA(cudaEventRecord(e1, stream));
    BENCH_CUDA(cudaEventSynchronize(e1));
    if (!r.ok()) { state.SkipWithError(r.what().c_str()); break; }
    float ms = 0, ms_f = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    BENCH_CUDA(cudaEventElapsedTime(&ms_f, e0, em));
    fwd_ms += ms_f;
    bwd_ms += ms - ms_f;
    cudaEvent_t prev = em;
    for (int k = 0; k <= kStages && !overlap; ++k) {
      float t = 0;
      BENCH_CUDA(cudaEventElapsedTime(&t, prev, k < kStages ? ev[k] : e1));
      stage_ms[k] += t;
      prev = k < kStages ? ev[k] : e1;
    }
    ++it;
    state.SetIterationTime(ms * 1e-3);
  }
  const double flop = (forward_flop_per_token_head(num_iter, D, 64) + backward_flop_per_token_head(num_iter, D, 64)) *
                      static_cast<double>(tokens) * H;
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["TFLOP/s"] = benchmark::Counter(flop * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["frac_790"] = benchmark::Counter(flop * 1e-12 / kCeilingTflops, benchmark::Counter::kIsIterationInvariantRate);
  const double n_it = it > 0 ? static_cast<double>(it) : 1.0;
  state.counters["fwd_ms"] = fwd_ms / n_it;
  state.counters["bwd_ms"] = bwd_ms / n_it;
  const char* const stage_names[kStages + 1] = {"b0_prologue_ms", "b1_solve_ms", "b2_rscan_ms", "b3_gla_ms", "b4_cov_ms",
                                                "b5_finish_ms"};
  for (int k = 0; k <= kStages && !overlap; ++k) state.counters[stage_names[k]] = stage_ms[k] / n_it;
  for (cudaEvent_t e : ev) BENCH_CUDA(cudaEventDestroy(e));
  BENCH_CUDA(cudaStreamDestroy(stream));
  if (side != nullptr) BENCH_CUDA(cudaStreamDestroy(side));
  for (cudaEvent_t e : {e0, e1, em}) BENCH_CUDA(cudaEventDestroy(e));
  for (void* p : {q, k, v, alpha, g, o, x, nu, d_o, dq, dk, dv, dalpha, dg, fws, bws}) BENCH_CUDA(cudaFree(p));
}

// The same at T = 2048 with r Chebyshev rounds (second argument): r = 0 times everything but the
// hot loop, so the difference to r = 30 is the loop's share (TFLOP/s counts the FLOPs of that r).
void BM_forward_iters(benchmark::State& state) { run_forward(state, state.range(0), static_cast<int>(state.range(1))); }

void BM_forward_bf16_states(benchmark::State& state) { run_forward(state, state.range(0), 30, gka::DType::kBF16); }

void BM_forward_backward(benchmark::State& state) { run_forward_backward(state, gka::DType::kFP32); }
void BM_forward_backward_bf16_states(benchmark::State& state) { run_forward_backward(state, gka::DType::kBF16); }
void BM_forward_backward_overlap(benchmark::State& state) {
  run_forward_backward(state, state.range(1) ? gka::DType::kBF16 : gka::DType::kFP32, true);
}
// bf16 chunk states with BackwardArgs::scan_segments forced (1: one reverse-scan chain per sequence).
void BM_forward_backward_segments(benchmark::State& state) {
  run_forward_backward(state, gka::DType::kBF16, state.range(2) != 0, static_cast<int>(state.range(1)));
}
// The same with 2 heads (few scan CTAs: one sequence of 65,536 tokens gives 12), segments 1 or
// chosen by the library (0).
void BM_forward_backward_2heads(benchmark::State& state) {
  run_forward_backward(state, gka::DType::kBF16, false, static_cast<int>(state.range(1)), 2);
}

BENCHMARK(BM_forward)
    ->Arg(2048)->Arg(8192)->Arg(32768)
    ->UseManualTime()->Unit(benchmark::kMillisecond)
    ->Iterations(10)->Repetitions(5)->ReportAggregatesOnly(true)
    ->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });

BENCHMARK(BM_forward_bf16_states)
    ->Arg(2048)->Arg(8192)->Arg(32768)
    ->UseManualTime()->Unit(benchmark::kMillisecond)
    ->Iterations(10)->Repetitions(5)->ReportAggregatesOnly(true)
    ->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });

BENCHMARK(BM_forward_backward)
    ->Arg(2048)->Arg(8192)->Arg(32768)
    ->UseManualTime()->Unit(benchmark::kMillisecond)
    ->Iterations(5)->Repetitions(3)->ReportAggregatesOnly(true);

BENCHMARK(BM_forward_backward_bf16_states)
    ->Arg(2048)->Arg(8192)->Arg(32768)
    ->UseManualTime()->Unit(benchmark::kMillisecond)
    ->Iterations(5)->Repetitions(3)->ReportAggregatesOnly(true);

BENCHMARK(BM_forward_backward_overlap)
    ->ArgsProduct({{2048, 8192, 32768}, {0, 1}})->ArgNames({"T", "bf16_states"})
    ->UseManualTime()->Unit(benchmark::kMillisecond)
    ->Iterations(5)->Repetitions(3)->ReportAggregatesOnly(true);

BENCHMARK(BM_forward_backward_segments)
    ->ArgsProduct({{8192, 32768}, {1, 2, 4, 8, 16}, {0, 1}})->ArgNames({"T", "segments", "overlap"})
    ->UseManualTime()->Unit(benchmark::kMillisecond)
    ->Iterations(5)->Repetitions(3)->ReportAggregatesOnly(true);

BENCHMARK(BM_forward_backward_2heads)
    ->ArgsProduct({{8192, 65536}, {1, 0}})->ArgNames({"T", "segments"})
    ->UseManualTime()->Unit(benchmark::kMillisecond)
    ->Iterations(5)->Repetitions(3)->ReportAggregatesOnly(true);

BENCHMARK(BM_forward_iters)
    ->Args({2048, 0})->Args({2048, 15})
    ->UseManualTime()->Unit(benchmark::kMillisecond)
    ->Iterations(10)->Repetitions(3)->ReportAggregatesOnly(true);

}  // namespace

BENCHMARK_MAIN();
