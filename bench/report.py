"""Print a compact table of a pytest-benchmark JSON file (used last by bench/gpu_check.sh).

    python bench/report.py bench.json [--sort name|mean]

One line per benchmark: group, name, median and min time in microseconds, rounds, and the
``extra_info`` the benchmark recorded (e.g. ``GB/s``, ``backend``), so numbers from different
backends of one op sit next to each other.
"""
from __future__ import annotations

import argparse
import json
import sys


def rows(data):
    out = []
    for b in data.get("benchmarks", []):
        s = b["stats"]
        extra = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((b.get("extra_info") or {}).items()))
        out.append((b.get("group") or "", b["name"], s["median"] * 1e6, s["min"] * 1e6, s["rounds"], extra))
    return out


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table(data, sort="name") -> str:
    r = rows(data)
    if not r:
        return "(no benchmarks in the file)"
    r.sort(key=(lambda x: (x[0], x[1])) if sort == "name" else (lambda x: (x[0], x[2])))
    head = ("group", "benchmark", "median us", "min us", "rounds", "extra")
    cells = [head] + [(g, n, f"{med:.1f}", f"{mn:.1f}", str(rd), ex) for g, n, med, mn, rd, ex in r]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head) - 1)]
    lines = []
    for c in cells:
        lines.append("  ".join(c[i].ljust(widths[i]) if i < 2 else c[i].rjust(widths[i]) for i in range(len(widths)))
                     + ("  " + c[-1] if c[-1] else ""))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json")
    ap.add_argument("--sort", choices=("name", "mean"), default="name")
    args = ap.parse_args(argv)
    with open(args.json) as f:
        print(table(json.load(f), args.sort))
    return 0


if __name__ == "__main__":
    sys.exit(main())
