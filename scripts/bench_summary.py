#!/usr/bin/env python3
"""Medians and ratios from the output of scripts/bench-vs-llama-cpp.sh (read on stdin).

Prints one table: pp512, tg128 and batched-bench S_TG per B, docanalyze beside llama.cpp,
the ratio of the medians, the median of each run's own ratio (run r of docanalyze over run r
of llama.cpp, which ran next to it: steadier on a host whose speed drifts), and each engine's
S_TG speedup over its own B=1.
"""
import re
import statistics
import sys

ours = {}
theirs = {}
engine = None
for line in sys.stdin:
    if line.startswith("== docanalyze"):
        engine = ours
    elif line.startswith("== llama.cpp"):
        engine = theirs
    if engine is None or not line.startswith("|"):
        continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if engine is ours:
        if cells[0] in ("pp512", "tg128"):
            ours.setdefault(cells[0], []).append(float(cells[1]))
        elif len(cells) >= 5 and cells[2].isdigit():
            ours.setdefault(f"B={cells[2]}", []).append(float(cells[4]))
    else:
        m = re.match(r"(pp512|tg128)", cells[-2]) if len(cells) >= 2 else None
        if m:
            theirs.setdefault(m.group(1), []).append(float(cells[-1].split()[0]))
        elif len(cells) >= 8 and cells[2].isdigit():
            theirs.setdefault(f"B={cells[2]}", []).append(float(cells[7]))

def med(d, k):
    return statistics.median(d[k]) if d.get(k) else None

keys = ["pp512", "tg128"] + sorted(
    {k for k in list(ours) + list(theirs) if k.startswith("B=")}, key=lambda k: int(k[2:])
)
runs = max((len(v) for v in ours.values()), default=0)
print(f"medians of {runs} run(s); S_TG = aggregate decode tok/s of B sequences")
def paired(k):
    pairs = list(zip(ours.get(k, []), theirs.get(k, [])))
    return statistics.median(a / b for a, b in pairs) if pairs else None

print(f"| {'workload':<10} | {'docanalyze':>10} | {'llama.cpp':>9} | {'ratio':>6} | {'paired':>6} | {'ours vs B=1':>11} | {'llama.cpp vs B=1':>16} |")
print(f"|{'-'*12}|{'-'*12}|{'-'*11}|{'-'*8}|{'-'*8}|{'-'*13}|{'-'*18}|")
for k in keys:
    a, b = med(ours, k), med(theirs, k)
    ratio = f"{a / b:.2f}x" if a and b else "-"
    p = paired(k)
    per_run = f"{p:.2f}x" if p else "-"
    own = f"{a / med(ours, 'B=1'):.2f}x" if k.startswith("B=") and a and med(ours, "B=1") else ""
    peer = f"{b / med(theirs, 'B=1'):.2f}x" if k.startswith("B=") and b and med(theirs, "B=1") else ""
    name = k if not k.startswith("B=") else f"S_TG {k}"
    fa = f"{a:.1f}" if a else "-"
    fb = f"{b:.1f}" if b else "-"
    print(f"| {name:<10} | {fa:>10} | {fb:>9} | {ratio:>6} | {per_run:>6} | {own:>11} | {peer:>16} |")
