#!/usr/bin/env bash
# scripts/gpu_validate.sh: runs every GPU test and benchmark of gka in one call and prints a short
# table last. Logs go under $OUT (default ./gpu-validate-out).
#
#   GKA_BIN_DIR=.carry scripts/gpu_validate.sh     # prebuilt binaries (gka_gpu_tests, gka_bench_forward)
#   scripts/gpu_validate.sh                         # otherwise builds into build-gpu with CMake first
#
# A prebuilt binary dir may also hold libbenchmark.so.1* (Google Benchmark), put on LD_LIBRARY_PATH.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu-validate-out}"
mkdir -p "$OUT"
BIN="${GKA_BIN_DIR:-}"
if [ -z "$BIN" ]; then
  BIN="$ROOT/build-gpu"
  # GKA_CUDA_ARCHS (e.g. 90a-real) trims the build to the device at hand; default: sm_80 + sm_90a.
  cmake -S "$ROOT" -B "$BIN" -DCMAKE_BUILD_TYPE=Release -DGKA_BUILD_EXAMPLES=OFF \
    ${GKA_CUDA_ARCHS:+-DCMAKE_CUDA_ARCHITECTURES=$GKA_CUDA_ARCHS} > "$OUT/cmake.log" 2>&1 &&
    cmake --build "$BIN" -j "${GKA_JOBS:-8}" --target gka_gpu_tests gka_bench_forward gka_bench_decode > "$OUT/build.log" 2>&1 ||
    { echo "configure or build failed, see $OUT/cmake.log and $OUT/build.log"; tail -30 "$OUT/cmake.log" "$OUT/build.log" 2>/dev/null; exit 1; }
  TESTS="$BIN/tests/gka_gpu_tests"; BENCH="$BIN/bench/gka_bench_forward"
else
  BIN="$(cd "$BIN" && pwd)"
  TESTS="$BIN/gka_gpu_tests"; BENCH="$BIN/gka_bench_forward"
  export LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv 2>&1 || true; } | tee "$OUT/device.txt"
# The device copy of the tree may lack git history: GKA_COMMIT names the commit that was built.
echo "${GKA_COMMIT:-$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)}" | tee "$OUT/commit.txt"

echo "== GPU tests"
"$TESTS" -r compact "${GKA_TEST_FILTER:-[gpu]}" 2>&1 | tee "$OUT/tests.log"
TEST_RC=${PIPESTATUS[0]}

echo "== benchmarks"
BENCH_RC=0
if [ -x "$BENCH" ]; then
  "$BENCH" --benchmark_out="$OUT/bench.json" --benchmark_out_format=json ${GKA_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
  BENCH_RC=${PIPESTATUS[0]}
else
  echo "no benchmark binary at $BENCH" | tee "$OUT/bench.log"; BENCH_RC=1
fi

# The decode step (gka_bench_decode, next to the forward benchmark), when it was built.
DEC_BENCH="$(dirname "$BENCH")/gka_bench_decode"
DEC_RC=0
if [ -x "$DEC_BENCH" ]; then
  echo "== decode benchmark"
  "$DEC_BENCH" --benchmark_out="$OUT/bench_decode.json" --benchmark_out_format=json 2>&1 | tee "$OUT/bench_decode.log"
  DEC_RC=${PIPESTATUS[0]}
fi

# Optional: the README demo (only with GKA_BIN_DIR holding gka_demo: the build above turns the
# examples off) and the FlashAttention-2 / cuDNN anchors through PyTorch SDPA at the same shapes
# (GKA_SDPA=1; needs torch on the device; its exit code does not enter the script's).
if [ -x "$BIN/gka_demo" ]; then
  echo "== demo"
  "$BIN/gka_demo" 2>&1 | tee "$OUT/demo.log"
fi
if [ -x "$BIN/gka_train_step" ]; then
  echo "== training-step example"
  "$BIN/gka_train_step" 2>&1 | tee "$OUT/train_step.log"
fi
if [ "${GKA_SDPA:-0}" = 1 ]; then
  echo "== PyTorch SDPA anchors"
  python3 "$ROOT/bench/sdpa_baseline.py" --json "$OUT/sdpa.json" 2>&1 | tee "$OUT/sdpa.log"
fi

{
  echo
  echo "================ summary ================"
  head -2 "$OUT/device.txt" | tail -1
  echo "tests exit code: $TEST_RC   (0 = all passed, 77 = skipped: no device)"
  grep -E "^(Passed|Failed|All tests passed)" "$OUT/tests.log" | tail -2  # compact reporter, Catch2 v2 | v3 wording
  echo "-- relative L2 error vs float64 reference"
  grep "^ERR|" "$OUT/tests.log" | sed 's/^ERR| //'
  echo "-- forward, 65,536 tokens x 16 heads, D 128, bf16 (medians over repetitions of the mean of 10 calls;"
  echo "   BM_forward: r 30, BM_forward_bf16_states: bf16 chunk states, BM_forward_iters/T/r: r rounds,"
  echo "   BM_forward_backward: forward + backward, bp_lambda on, saved chunk states; FLOPs of both;"
  echo "   _bf16_states: bf16 chunk states (forward and backward); _overlap: BackwardArgs::overlap_stream)"
  grep -E "_median" "$OUT/bench.log" | awk '{
      name=$1; ms=$2; line=$0; tf=""; tok=""; fr=""; sc=""; so="";
      if (match(line, /TFLOP\/s=[0-9.]+[kMG]?\/s/)) tf=substr(line, RSTART+8, RLENGTH-8);
      if (match(line, /tokens\/s=[0-9.]+[kMG]?\/s/)) tok=substr(line, RSTART+9, RLENGTH-9);
      if (match(line, /frac_790=[0-9.]+[munk]?\/s/)) fr=substr(line, RSTART+9, RLENGTH-9);
      if (match(line, /scan_ms=[0-9.]+[munk]?/)) sc=substr(line, RSTART+8, RLENGTH-8);
      if (match(line, /solve_ms=[0-9.]+[munk]?/)) so=substr(line, RSTART+9, RLENGTH-9);
      if (match(line, /fwd_ms=[0-9.]+[munk]?/)) { sc=substr(line, RSTART+7, RLENGTH-7); lab1="fwd"; } else lab1="scan";
      if (match(line, /bwd_ms=[0-9.]+[munk]?/)) { so=substr(line, RSTART+7, RLENGTH-7); lab2="bwd"; } else lab2="solve";
      printf "%-34s %8s ms  tokens/s %-10s TFLOP/s %-8s frac-of-790 %-9s %s %s ms  %s %s ms\n", name, ms, tok, tf, fr, lab1, sc, lab2, so }'
  if grep -q "^BM_forward_backward.*_median" "$OUT/bench.log"; then
    echo "-- backward kernels (ms, medians): prologue, adjoint solve, reverse scans, GLA, covariance, finish"
    grep -E "^BM_forward_backward.*_median" "$OUT/bench.log" | awk '{
        line=$0; out=$1;
        n=split("b0_prologue_ms b1_solve_ms b2_rscan_ms b3_gla_ms b4_cov_ms b5_finish_ms", k, " ");
        for (i = 1; i <= n; ++i) if (match(line, k[i] "=[0-9.]+[munk]?")) out=out "  " substr(line, RSTART, RLENGTH);
        print out }'
  fi
  echo "bench exit code: $BENCH_RC"
  if [ -f "$OUT/bench_decode.log" ]; then
    echo "-- decode step, 16 heads, D 128, bf16, r 30, CUDA graph, medians (us: cold L2; GBps: spec-5 state bytes / us)"
    grep -E "^BM_decode" "$OUT/bench_decode.log" | awk '{
        line=$0; us=""; w=""; g=""; gb=""; fr="";
        if (match(line, / us=[0-9.]+[kMGmun]?/)) us=substr(line, RSTART+4, RLENGTH-4);
        if (match(line, /us_warm=[0-9.]+[kMGmun]?/)) w=substr(line, RSTART+8, RLENGTH-8);
        if (match(line, /us_graph10=[0-9.]+[kMGmun]?/)) g=substr(line, RSTART+11, RLENGTH-11);
        if (match(line, /GBps=[0-9.]+[kMGmun]?/)) gb=substr(line, RSTART+5, RLENGTH-5);
        if (match(line, /frac_4200=[0-9.]+[kMGmun]?/)) fr=substr(line, RSTART+10, RLENGTH-10);
        printf "%-48s us %-8s warm %-8s in-graph-of-10 %-8s GB/s %-8s frac-of-4.2TB/s %s\n", $1, us, w, g, gb, fr }'
    echo "decode bench exit code: $DEC_RC"
  fi
  if [ -f "$OUT/demo.log" ]; then echo "-- demo"; grep -E "backend|error|demo:" "$OUT/demo.log"; fi
  if [ -f "$OUT/train_step.log" ]; then echo "-- training-step example"; cat "$OUT/train_step.log"; fi
  if [ -f "$OUT/sdpa.log" ]; then echo "-- PyTorch SDPA, causal, same tokens/heads/dim"; cat "$OUT/sdpa.log"; fi
} | tee "$OUT/summary.txt"
[ "$TEST_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ] && [ "$DEC_RC" -eq 0 ]
