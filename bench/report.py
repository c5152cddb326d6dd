"""The GPU check's table: step status, microbenchmarks with ratios, the issue's goals, the e2e summary.

    python bench/report.py bench.json [more.json ...] [--steps steps.tsv] [--tests tests.xml] [--e2e e2e.json]

Every input is optional and may be missing, empty or truncated: the table is printed from
whatever exists (that is the point: gpu_check.sh calls it whatever failed before).

* ``--steps``: one line per gpu_check step, ``name<TAB>status<TAB>seconds<TAB>detail``.
* bench JSON (pytest-benchmark's, or ``bench/run_bench.py``'s with ``skipped``/``errors``): per row
  op, shape, mode, backend, time (device time ``extra_info.time_s`` when recorded, else the
  median), the host-inclusive call time, microseconds per row, GB/s, ``of_floor`` = (bytes / copy bandwidth) / time, and the
  ratios ``x_sdpa`` / ``x_flex`` / ``x_torch`` = baseline time / this row's time (same op and shape;
  > 1 means faster than the baseline). ``goal``: met / MISSED for rows a goal applies to.
* ``--tests``: the kernel tests' JUnit XML, counted per backend (test ids naming ``cuda`` /
  ``triton``): "every backend equal to the reference" is met when a backend's tests ran and none failed.
* ``--e2e``: ``bench/e2e_loop.py``'s ``e2e.json``: AR step and block times per method and budget.

The goals (issue 21, H200, per kernel backend): tree attention >= 60% of the 4.3 TB/s copy bandwidth
at B=1 GQA (32/8) prefix 16384 and at B=8; rrs verify_tree <= 25 us at B=1, T=31, V=32000 and <= 60 us
at B=64, T=31, V=128256 bf16; kseq <= 3x rrs at the same shapes; Gumbel-top-k
(sample_without_replacement) <= 6 us at 64 x 32000, k=4; every backend equal to the reference; (issue 19)
verify_tree(mode="traversal") <= 40 us per row at B=1, T=31, V=32000. The
ratios to SDPA / FlexAttention / the torch reference stay in the table (issue 15's comparisons).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import xml.etree.ElementTree as ET

KERNELS = ("triton", "cuda")
ATTN_MIN_FRACTION = 0.60
ATTN_GQA_SHAPE = "(1, 32, 8, 31, 128, 16415)"  # (B, Hq, Hkv, T, D, S): B=1 GQA, prefix 16384
ATTN_BATCH = 8
VERIFY_B1_SHAPE, VERIFY_B1_MAX_US = "(1, 31, 32000)", 25.0
VERIFY_B64_SHAPE, VERIFY_B64_MAX_US = "(64, 31, 128256)", 60.0
KSEQ_MAX_X_RRS = 3.0
SAMPLE_SHAPE, SAMPLE_MAX_US = "(64, 32000, 4)", 6.0
TRAVERSAL_MAX_US = 40.0  # issue 19: verify_tree(mode="traversal"), microseconds per row at VERIFY_B1_SHAPE


# ---------------------------------------------------------------- inputs

def load_bench(paths):
    """Rows (dicts) and the skipped / error entries of every readable bench JSON."""
    rows, skipped, errors = [], [], []
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            errors.append({"name": os.path.basename(path), "error": f"unreadable: {exc}"})
            continue
        skipped += data.get("skipped", [])
        errors += data.get("errors", [])
        for b in data.get("benchmarks", []):
            info = b.get("extra_info", {})
            t = info.get("time_s") or b.get("stats", {}).get("median")
            if not isinstance(t, (int, float)) or not t > 0:
                continue
            peak, nbytes = info.get("peak_gbps"), info.get("bytes")
            rows.append({
                "op": info.get("op", b.get("name", "?")), "shape": info.get("shape", ""), "mode": info.get("mode", ""),
                "backend": info.get("backend", ""), "time_s": float(t), "rows": info.get("rows"),
                "call_s": info.get("call_s"),
                "gbps": nbytes / t / 1e9 if nbytes else None,
                "of_floor": (nbytes / (peak * 1e9)) / t if nbytes and peak else None,
                "prefix": info.get("prefix"), "device": info.get("device", ""), "peak_gbps": peak,
            })
    return rows, skipped, errors


def add_ratios(rows):
    by = {(r["op"], r["shape"], r["mode"], r["backend"]): r for r in rows}
    for r in rows:
        for base, col in (("sdpa", "x_sdpa"), ("flex", "x_flex"), ("torch", "x_torch")):
            b = by.get((r["op"], r["shape"], r["mode"], base))
            r[col] = b["time_s"] / r["time_s"] if b is not None and r["backend"] != base else None
    return rows


def load_tests(path):
    """``{backend: {"passed", "failed", "skipped"}}`` from JUnit XML, or None."""
    if not path or not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    out = {b: {"passed": 0, "failed": 0, "skipped": 0} for b in KERNELS + ("other",)}
    for tc in root.iter("testcase"):
        name = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        b = "cuda" if "cuda" in name.lower() else "triton" if "triton" in name.lower() else "other"
        if tc.find("failure") is not None or tc.find("error") is not None:
            out[b]["failed"] += 1
        elif tc.find("skipped") is not None:
            out[b]["skipped"] += 1
        else:
            out[b]["passed"] += 1
    return out


def load_steps(path):
    steps = []
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if parts and parts[0]:
                    steps.append((parts + ["", "", ""])[:4])
    return steps


# ---------------------------------------------------------------- goals

def _batch(r):
    try:
        return int(r["shape"].strip("()").split(",")[0])
    except (ValueError, AttributeError):
        return 0


def goals(rows, tests, build_failed=False, tests_partial=False):
    """``[(goal, backend, value text, status)]``, status "met" / "MISSED" / "not measured"; marks rows' ``goal``."""
    out = []

    def mark(r, ok):
        r["goal_misses"] = r.get("goal_misses", 0) + (not ok)

    for b in KERNELS:
        why = "not measured" + (" (build failed)" if b == "cuda" and build_failed else "")
        mine = [r for r in rows if r["backend"] == b]
        for label, pick in ((f"tree attention >= {ATTN_MIN_FRACTION:.0%} of copy bw, B=1 GQA prefix 16384",
                             lambda r: r["shape"] == ATTN_GQA_SHAPE),
                            (f"tree attention >= {ATTN_MIN_FRACTION:.0%} of copy bw, B={ATTN_BATCH}",
                             lambda r: _batch(r) == ATTN_BATCH)):
            vals = [r for r in mine if r["op"] == "tree_attention" and pick(r) and r.get("of_floor") is not None]
            if not vals:
                out.append((label, b, "-", why))
                continue
            for r in vals:
                mark(r, r["of_floor"] >= ATTN_MIN_FRACTION)
            w = min(vals, key=lambda r: r["of_floor"])
            out.append((label, b, f"min {w['of_floor']:.0%} at {w['shape']}",
                        "met" if w["of_floor"] >= ATTN_MIN_FRACTION else "MISSED"))
        ver = {(r["shape"], r["mode"]): r for r in mine if r["op"] == "verify_tree"}
        for shape, limit, text in ((VERIFY_B1_SHAPE, VERIFY_B1_MAX_US, "B=1 T=31 V=32000"),
                                   (VERIFY_B64_SHAPE, VERIFY_B64_MAX_US, "B=64 T=31 V=128256 bf16")):
            label = f"verify_tree rrs <= {limit:g} us, {text}"
            r = ver.get((shape, "rrs"))
            if r is None:
                out.append((label, b, "-", why))
                continue
            us = 1e6 * r["time_s"]
            mark(r, us <= limit)
            out.append((label, b, f"{us:.1f} us", "met" if us <= limit else "MISSED"))
        label = f"verify_tree kseq <= {KSEQ_MAX_X_RRS:g}x rrs, same shapes"
        pairs = [(ver[(s, "kseq")], ver[(s, "rrs")]) for s in (VERIFY_B1_SHAPE, VERIFY_B64_SHAPE)
                 if (s, "kseq") in ver and (s, "rrs") in ver]
        if pairs:
            x, k = max(((k["time_s"] / r["time_s"], k) for k, r in pairs), key=lambda v: v[0])
            for kk, rr in pairs:
                mark(kk, kk["time_s"] / rr["time_s"] <= KSEQ_MAX_X_RRS)
            out.append((label, b, f"max {x:.2f}x at {k['shape']}", "met" if x <= KSEQ_MAX_X_RRS else "MISSED"))
        else:
            out.append((label, b, "-", why))
        label = f"sample_without_replacement <= {SAMPLE_MAX_US:g} us, 64x32000 k=4"
        r = next((r for r in mine if r["op"] == "sample_without_replacement" and r["shape"] == SAMPLE_SHAPE), None)
        if r is None:
            out.append((label, b, "-", why))
        else:
            us = 1e6 * r["time_s"]
            mark(r, us <= SAMPLE_MAX_US)
            out.append((label, b, f"{us:.1f} us", "met" if us <= SAMPLE_MAX_US else "MISSED"))
        out.append(_traversal_goal(rows, b, why))
        t = (tests or {}).get(b)
        if t is None or t["passed"] + t["failed"] == 0:
            out.append(("equal to the reference (kernel tests)", b,
                        "-" if t is None else f"{t['skipped']} skipped", why if t is None or b == "cuda" and build_failed
                        else "not measured (all skipped)"))
        else:
            out.append(("equal to the reference (kernel tests)", b,
                        f"{t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped",
                        "MISSED" if t["failed"] else "met (partial: tests step stopped)" if tests_partial else "met"))
    for r in rows:
        if "goal_misses" in r:
            r["goal"] = "met" if r["goal_misses"] == 0 else "MISSED"
    return out


def _traversal_goal(rows, backend, why):
    """Issue 19's floor: traversal verification at the goal shape, microseconds per row."""
    label = f"verify_tree traversal <= {TRAVERSAL_MAX_US:g} us/row, B=1 T=31 V=32000"
    trav = [r for r in rows if r["op"] == "verify_tree" and r["backend"] == backend and r["shape"] == VERIFY_B1_SHAPE
            and r["mode"] == "traversal"]
    if not trav:
        return label, backend, "-", why
    us = max(1e6 * r["time_s"] / (r.get("rows") or 1) for r in trav)
    for r in trav:
        r["goal_misses"] = r.get("goal_misses", 0) + (1e6 * r["time_s"] / (r.get("rows") or 1) > TRAVERSAL_MAX_US)
    return label, backend, f"{us:.1f} us/row", "met" if us <= TRAVERSAL_MAX_US else "MISSED"


# ---------------------------------------------------------------- printing

def _f(v, fmt, dash="-"):
    return dash if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def format_bench(rows):
    fmt = "{:<26} {:<26} {:<9} {:<7} {:>10} {:>10} {:>9} {:>8} {:>8} {:>7} {:>7} {:>7}  {}"
    lines = [fmt.format("op", "shape", "mode", "backend", "time_us", "call_us", "us/row", "GB/s", "of_floor",
                        "x_sdpa", "x_flex", "x_torch", "goal")]
    for r in sorted(rows, key=lambda r: (r["op"], r["shape"], r["mode"], r["backend"])):
        lines.append(fmt.format(
            r["op"], r["shape"], r["mode"], r["backend"], _f(1e6 * r["time_s"], "{:.1f}"),
            _f(r["call_s"] and 1e6 * r["call_s"], "{:.1f}"),
            _f(1e6 * r["time_s"] / r["rows"] if r.get("rows") else None, "{:.2f}"), _f(r["gbps"], "{:.0f}"),
            _f(r["of_floor"], "{:.0%}"), _f(r["x_sdpa"], "{:.2f}"), _f(r["x_flex"], "{:.2f}"),
            _f(r["x_torch"], "{:.1f}"), r.get("goal", "")))
    return lines


def format_e2e(path):
    """AR step and block times (ms, pattern ``none``; ``full`` in brackets) per target, method and budget."""
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, ValueError) as exc:
        return [f"(no e2e results: {exc})"]
    lines = [f"ERROR: {res['error']}"] if res.get("error") else []
    budgets = res.get("settings", {}).get("budgets", [])
    errors = [r for r in res.get("results", []) if "error" in r]
    for tname in res.get("settings", {}).get("targets", []):
        recs = {(r["method"], r.get("budget"), r["pattern"]): r for r in res.get("results", [])
                if r["target"] == tname and "error" not in r and r.get("blocks")}
        ar = recs.get(("ar", None, "none"))
        m = res.get("models", {}).get(tname, {})
        lines.append(f"{tname} ({_f(m.get('params', {}).get('total', None) and m['params']['total'] / 1e9, '{:.2f}e9')} "
                     f"params, built in {_f(m.get('build_s'), '{:.1f}')}s): AR step "
                     f"{_f(ar and 1e3 * ar.get('wall_unsynced_s', ar['wall_s']), '{:.2f}')} ms (target {_f(ar and 1e3 * ar.get('target_s', float('nan')), '{:.2f}')} ms)")
        lines.append("  block ms, 0 accepted [full path]: " + " ".join(f"{b:>15}" for b in budgets))

        def bt(r):  # the block time: without the per-forward synchronisation where measured
            return r.get("wall_unsynced_s", r["wall_s"])

        for method in ("sd", "spectr", "rsd-c", "rsd-s"):
            cells = []
            for b in budgets:
                n, fl = recs.get((method, b, "none")), recs.get((method, b, "full"))
                cells.append(f"{_f(n and 1e3 * bt(n), '{:.1f}'):>7} [{_f(fl and 1e3 * bt(fl), '{:.1f}'):>5}]")
            lines.append(f"  {method:33s} " + " ".join(f"{c:>15}" for c in cells))
        split_b = 10 if 10 in budgets else (budgets[0] if budgets else None)
        parts = [k for r in recs.values() for k in r if k.endswith("_s") and k not in ("wall_s", "wall_unsynced_s", "prefill_s", "other_s")]
        parts = list(dict.fromkeys(parts)) + ["other_s"]
        lines.append(f"  split at budget {split_b}, 0 accepted, synchronised blocks (ms): " + " ".join(f"{p[:-2]:>8}" for p in parts))
        for method in ("ar", "sd", "spectr", "rsd-c", "rsd-s"):
            r = recs.get((method, None if method == "ar" else split_b, "none"))
            if r is not None:
                lines.append(f"    {method:7s} {str(r.get('config') or '-'):18s}      "
                             + " ".join(f"{_f(r.get(p) and 1e3 * r[p], '{:.2f}'):>8}" for p in parts))
    if errors:
        lines.append(f"{len(errors)} configurations failed, first: {errors[0]['target']} {errors[0]['config']}: "
                     f"{errors[0]['error'][:200]}")
    for sk in res.get("skipped", []):
        if "config" not in sk:  # a whole target
            lines.append(f"{sk.get('target')}: not run: {sk.get('reason')}")
    n = sum("config" in sk for sk in res.get("skipped", []))
    if n:
        lines.append(f"{n} configurations x patterns not run (time budget)")
    proj = os.path.join(os.path.dirname(path), "projected.json")
    if os.path.exists(proj):
        lines += format_projected(proj, budgets)
    return lines


def format_projected(path, budgets):
    """Projected token rate (method over AR) per model, data set, method and budget."""
    try:
        with open(path) as f:
            proj = json.load(f)
    except (OSError, ValueError) as exc:
        return [f"(no projection: {exc})"]
    lines = ["", "PROJECTED token rate over AR (a projection, not a measurement: tau from the CPU eval x the "
             f"block times above; {os.path.basename(path)}, draw it with `rsd plot`):"]
    cells = {}
    for r in proj.get("runs", []):
        cells[(r["model"], r["dataset"], r["method"], r["budget"])] = r["token_rate"]
    for model, ds in dict.fromkeys((m, d) for m, d, _, _ in cells):
        lines.append(f"  {model} on {ds}: " + " ".join(f"{b:>6}" for b in budgets))
        for method in ("sd", "spectr", "rsd-c", "rsd-s"):
            lines.append(f"    {method:{len(model) + len(ds) + 2}s} "
                         + " ".join(f"{_f(cells.get((model, ds, method, b)), '{:.2f}'):>6}" for b in budgets))
    if proj.get("missing"):
        lines.append(f"  ({len(proj['missing'])} configurations without a GPU block time or a CPU tau)")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", nargs="*", help="bench JSON files")
    ap.add_argument("--steps")
    ap.add_argument("--tests")
    ap.add_argument("--e2e")
    args = ap.parse_args(argv)
    steps = load_steps(args.steps)
    if steps:
        print(f"{'step':8s} {'status':22s} {'seconds':>7s}  detail")
        for name, status, secs, detail in steps:
            print(f"{name:8s} {status:22s} {secs:>7s}  {detail}")
    build_failed = any(s[0] == "build" and not s[1].startswith("ok") for s in steps)
    rows, skipped, errors = load_bench(args.bench)
    add_ratios(rows)
    tests = load_tests(args.tests)
    tests_partial = any(s[0] == "tests" and s[1].startswith("TIMEOUT") for s in steps)
    gl = goals(rows, tests, build_failed, tests_partial)
    peaks = sorted({r["peak_gbps"] for r in rows if r.get("peak_gbps")})
    devs = sorted({r["device"] for r in rows if r.get("device")})
    print(f"\n== microbenchmarks on {', '.join(devs) or '?'}: time = device time per call; of_floor = "
          f"(bytes / {', '.join(f'{p:g}' for p in peaks) or 'no'} GB/s copy bandwidth) / time; x_* = baseline time / time;"
          "\n   call_us = host-inclusive time of one call (+ synchronize); goals use time_us")
    if rows:
        print("\n".join(format_bench(rows)))
    else:
        print("(no benchmark rows)")
    reasons = {}
    for s in skipped:
        reasons.setdefault(str(s.get("reason", "?"))[:110], []).append(s.get("name", "?"))
    for why, names in sorted(reasons.items()):
        print(f"skipped {len(names)}: {why}")
    for e in errors[:8]:
        print(f"ERROR {e.get('name')}: {str(e.get('error'))[:200]}")
    print("\n== goals (issue 21, H200)")
    print(f"{'goal':62s} {'backend':7s} {'value':38s} status")
    for g, b, v, st in gl:
        print(f"{g:62s} {b:7s} {v:38s} {st}")
    if args.e2e:
        print("\n== end-to-end loop (bench/e2e_loop.py; projection: projected.json next to e2e.json)")
        print("\n".join(format_e2e(args.e2e)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
