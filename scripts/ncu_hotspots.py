#!/usr/bin/env python3
"""Summarise an `ncu --page source --csv --print-source sass` export: the instructions with the most
warp-stall samples, and the stall reasons summed over the kernel. Usage: ncu_hotspots.py FILE.csv [N]"""
import csv, sys

def num(s):
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return 0.0

rows = list(csv.reader(open(sys.argv[1], newline="")))
top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
# the export may hold several kernels: each starts with a header row that names "Address"
blocks, cur = [], None
for r in rows:
    if r and "Address" in r and "Source" in r:
        cur = {"head": r, "rows": []}
        blocks.append(cur)
    elif cur is not None and len(r) == len(cur["head"]):
        cur["rows"].append(r)
    elif r and cur is None:
        print(" ".join(r)[:200])
for b in blocks:
    h = b["head"]
    samp = next((i for i, n in enumerate(h) if n.startswith("Warp Stall Sampling (All")), None)
    if samp is None:
        print("no sampling column in", h[:8]); continue
    src = h.index("Source")
    tot = sum(num(r[samp]) for r in b["rows"]) or 1.0
    print(f"== kernel block: {len(b['rows'])} instructions, {tot:.0f} samples; columns: {'|'.join(h)[:600]}")
    stall_cols = [i for i, n in enumerate(h) if n.lower().startswith("stall") or "stall_" in n.lower()]
    sums = sorted(((sum(num(r[i]) for r in b["rows"]), h[i]) for i in stall_cols), reverse=True)
    for s, n in sums[:12]:
        if s > 0: print(f"   {n:50s} {s:12.0f}")
    for r in sorted(b["rows"], key=lambda r: -num(r[samp]))[:top]:
        print(f"{100*num(r[samp])/tot:6.2f}%  {r[0]:>8s}  {r[src][:110]}")
