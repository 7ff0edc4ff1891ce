#!/usr/bin/env bash
# scripts/gpu_profile.sh: Nsight Compute profiles of the decode step (N = 1 and 64, m = 1) and of the
# backward's heaviest kernels at the benchmark shape: the details page and the instructions with the
# most warp-stall samples (scripts/ncu_hotspots.py), as text under $OUT. Needs ncu (the H200
# machine has it; --clock-control none leaves the clocks alone, as METHOD.md asks).
# rscan: the reverse scan at T = 32768, B = 2 (the timing test's third shape); scans: the forward's
# scan and the reverse scans inside forward + backward at T = 32768 with bf16 chunk states.
#   OUT=... GKA_BIN_DIR=.carry-final bash scripts/gpu_profile.sh [decode|bwd|rscan|scans]...
set -u
OUT="${OUT:-./gpu-profile-out}"; mkdir -p "$OUT"
BIN="$(cd "${GKA_BIN_DIR:?prebuilt binaries}" && pwd)"
HERE="$(cd "$(dirname "$0")" && pwd)"
export LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

profile() {  # profile NAME KERNEL_REGEX BINARY ARGS...: one launch after ${SKIP:-2}, full set
  local name=$1 regex=$2; shift 2
  ncu --clock-control none --import-source yes --set full -k "regex:$regex" --launch-skip "${SKIP:-2}" --launch-count 1 \
    -o "$OUT/$name" -f "$@" > "$OUT/$name.log" 2>&1
  ncu -i "$OUT/$name.ncu-rep" --page details > "$OUT/$name.details.txt" 2>&1
  ncu -i "$OUT/$name.ncu-rep" --page source --csv --print-source sass > "$OUT/$name.sass.csv" 2>&1
  python3 "$HERE/ncu_hotspots.py" "$OUT/$name.sass.csv" 45 > "$OUT/$name.hot.txt" 2>&1
  rm -f "$OUT/$name.sass.csv"
  echo "== $name"; grep -E 'Duration|SM Frequency|Registers Per|Executed Ipc A|Warp Cycles Per Issued|Eligible Warps|No Eligible' "$OUT/$name.details.txt"
  head -20 "$OUT/$name.hot.txt"
}
[ $# -eq 0 ] && set -- decode bwd
for what in "$@"; do
  case $what in
    decode)
      profile decode_n1 decode "$BIN/gka_bench_decode" --benchmark_filter='BM_decode/N:1/m:1/'
      profile decode_n64 decode "$BIN/gka_bench_decode" --benchmark_filter='BM_decode/N:64/m:1/' ;;
    bwd)
      for k in bwd_cov bwd_solve bwd_gla; do
        profile "$k" "$k" "$BIN/gka_bench_forward" --benchmark_filter='BM_forward_backward/2048'
      done ;;
    scans)  # the forward's scan and the reverse scans at T = 32768 in the bf16 plan (bf16 chunk states)
      profile fscan_t32768 state_scan_mma "$BIN/gka_bench_forward" --benchmark_filter='BM_forward_backward_bf16_states/32768'
      profile rscan_bf16_t32768 bwd_reverse_scan "$BIN/gka_bench_forward" --benchmark_filter='BM_forward_backward_bf16_states/32768' ;;
    rscan)  # test_bwd_perf_rscan runs 9 launches per shape: the 21st is the third shape's third
      SKIP=20 profile rscan_t32768 bwd_reverse_scan "$BIN/gka_gpu_tests" "[perf][rscan]" ;;
  esac
done
