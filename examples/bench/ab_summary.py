#!/usr/bin/env python3
"""Medians of an examples/bench/ab.sh output, and each build's ratio to the
first build named on the command line. Usage: ab_summary.py results.txt BASE"""
import re, sys, statistics
from collections import defaultdict

text = open(sys.argv[1]).read()
base = sys.argv[2]
data = defaultdict(lambda: defaultdict(dict))
cur = None
for line in text.splitlines():
    m = re.match(r"== (\w+) (\S+) round", line)
    if m:
        cur = m.groups()
        continue
    if not line.startswith("run 1:") or cur is None:
        continue
    w, b = cur
    if w in ("fanout", "single", "lagging"):
        m = re.search(r"([\d.]+) lines/s, CPU [\d.]+ s \(([\d.]+) µs/line\), lost (-?\d+), terminal events (\d+)/(\d+).*seq errors (\d+), order errors (\d+).*peak RSS ([\d.]+) MiB", line)
        rate, cpu, lost, term, total, seqe, orde, peak = m.groups()
        d = data[w][b]
        d.setdefault("lines/s", []).append(float(rate))
        d.setdefault("CPU µs/line", []).append(float(cpu))
        d.setdefault("peak RSS MiB", []).append(float(peak))
        d.setdefault("lost+errors", []).append(int(lost) + int(seqe) + int(orde) + int(total) - int(term))
    else:
        m = re.search(r"\(([\d.]+) starts/s.*= ([\d.]+) B per live session.*stop all ([\d.]+) s \((\d+) exited", line)
        rate, per, stop, exited = m.groups()
        d = data[w][b]
        d.setdefault("starts/s", []).append(float(rate))
        d.setdefault("B per live session", []).append(float(per))
        d.setdefault("stop all s", []).append(float(stop))
for w, builds in data.items():
    print(f"## {w}")
    for metric in next(iter(builds.values())).keys():
        b0 = statistics.median(builds[base][metric]) if base in builds else None
        for b, d in builds.items():
            vals = d[metric]
            med = statistics.median(vals)
            ratio = f" ratio to {base} {med / b0:.2f}" if b0 and b != base else ""
            print(f"{metric:20} {b:10} median {med:.3f} ({', '.join(f'{v:g}' for v in vals)}){ratio}")
