#!/usr/bin/env python3
"""Times PyTorch SDPA (FLASH = FlashAttention-2, CUDNN = cuDNN fused attention) at the shapes of
gka's forward benchmark, so gka's times can be quoted as a ratio measured on the same machine.

Usage: python3 bench/sdpa_baseline.py [--tokens 65536] [--heads 16] [--dim 128] [--json out.json]
Timing: CUDA events around each call after warm-up, median of --reps calls, inputs rotated
among several buffers so L2 residency does not flatter.
"""
import argparse
import json
import statistics

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_ms(fn, reps, warmup=5):
    for _ in range(warmup):
        fn(0)
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=65536, help="B*T per call")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seqlens", type=int, nargs="+", default=[2048, 8192, 32768])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    rows = []
    for T in args.seqlens:
        B = args.tokens // T
        bufs = [
            [torch.randn(B, args.heads, T, args.dim, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
            for _ in range(3)
        ]
        # causal attention forward: 2 matmuls of B*H*T*T*D/2 MACs each
        flops = 4 * B * args.heads * T * T * args.dim / 2
        for name, backend in (("sdpa-flash2", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)):
            try:
                with sdpa_kernel(backend):
                    def run(i):
                        q, k, v = bufs[i % 3]
                        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
                    ms = time_ms(run, args.reps)
                rows.append({"impl": name, "B": B, "T": T, "H": args.heads, "D": args.dim, "ms": ms,
                             "tflops": flops / ms / 1e9})
            except RuntimeError as e:  # a backend unavailable on this build
                rows.append({"impl": name, "B": B, "T": T, "error": str(e).splitlines()[0]})
    for r in rows:
        if "ms" in r:
            print(f"{r['impl']:12s} B={r['B']:3d} T={r['T']:6d} H={r['H']} D={r['D']}  {r['ms']:8.3f} ms  {r['tflops']:6.1f} TFLOP/s")
        else:
            print(f"{r['impl']:12s} B={r['B']:3d} T={r['T']:6d}  unavailable: {r['error']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
