"""Roofline of the Triton kernels at the review's H200 shapes, before and after, without a GPU.

    python bench/roofline.py [--before 7ceeaa2] [--json out.json] [--only attention,verify,sampling]

Per op and shape (docs/kernels-h200.md, ../shared/research/kernel-review-h200.md): the bytes that
must move (attention: K + V + q + out; verification: the target and draft rows of a 4-node accepted
path -- greedy: target rows only; sampling: the logits once), the ideal time at 4.3 TB/s, and per
kernel launched: programs against the 132 SMs (and the waves they make at the compiled occupancy),
registers / spill bytes / shared memory of the sm_90 compile of the variant the runtime launches
(bench/sm90.py: Triton's JIT binder on the launcher's own arguments, so the runtime's
specialisation). "before" runs the same on the sources of ``--before`` (``git archive`` into a
temporary folder), with the old split rule evaluated for 132 SMs (it returned 1 without a CUDA
device). Compiles are cached by variant in ``--cache`` (default bench/.roofline_cache.json).
Takes minutes (one ``triton.compile`` per distinct variant; about 50 in all).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BW = 4.3e12  # bytes/s: the H200's measured copy bandwidth
SMS = 132
PATH_NODES = 4  # the review's scenario: 3 accepted + the root

ATTENTION = [dict(B=B, Hq=32, Hkv=hkv, T=31, D=128, prefix=p) for B in (1, 8) for hkv in (8, 32)
             for p in (512, 4096, 16384)]
VERIFY = ([dict(mode=m, B=B, V=V) for m in ("rrs", "kseq", "greedy") for B in (1, 64) for V in (32000, 128256)]
          + [dict(mode=m, B=1, V=32000, dtype="fp32") for m in ("rrs", "greedy")])
SAMPLING = [dict(R=64, V=32000, k=4), dict(R=64, V=32000, k=4, dtype="fp32"), dict(R=30, V=32000, k=4)]


def nbytes(op, s):
    e = {"bf16": 2, "fp16": 2, "fp32": 4}[s.get("dtype", "bf16")]
    if op == "tree_attention":
        S = s["prefix"] + s["T"]
        return (2 * s["B"] * s["Hkv"] * S + 2 * s["B"] * s["Hq"] * s["T"]) * s["D"] * e
    if op == "verify_tree":
        return (1 if s["mode"] == "greedy" else 2) * s["B"] * PATH_NODES * s["V"] * e
    return s["R"] * s["V"] * e


_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, os.environ["RSD_SM90_DIR"])
    import sm90
    from rsd_kernels.attention import triton_kernel as A
    if hasattr(A, "default_num_splits"):  # the old rule, as on a 132-SM device
        def default_num_splits(B, Hkv, m_blocks, max_prefix, device, min_keys_per_split=256):
            want = -(-2 * 132 // max(1, B * Hkv * m_blocks))
            return int(max(1, min(want, -(-max(max_prefix, 0) // min_keys_per_split), 64)))
        A.default_num_splits = default_num_splits
    cache_path = os.environ["RSD_ROOFLINE_CACHE"]
    tag = os.environ["RSD_ROOFLINE_TAG"]
    try:
        cache = json.load(open(cache_path))
    except (OSError, ValueError):
        cache = {}
    out = []
    for op, shape in json.loads(sys.argv[1]):
        kernels = []
        for l in sm90.launches_at(op, shape):
            key = tag + "|" + l.name + "|" + l.key
            if key not in cache:
                r = sm90.compile_launch(l)
                cache[key] = {k: r[k] for k in ("regs", "spill_bytes", "smem", "ctas_per_sm", "num_warps", "num_stages")}
                cache[key]["fp64"] = len(sm90.fp64_ops(r["ptx"]))
                cache[key]["ldgsts"] = r["sass"].count("LDGSTS")
                json.dump(cache, open(cache_path, "w"))
            kernels.append(dict(cache[key], kernel=l.name, grid=list(l.grid), programs=l.programs))
        out.append({"op": op, "shape": shape, "kernels": kernels})
        print("done", op, shape, file=sys.stderr, flush=True)
    print(json.dumps(out))
    """
)


def run(tree: str, tag: str, work: list, cache: str) -> list:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.update(PYTHONPATH=tree, RSD_SM90_DIR=HERE, RSD_ROOFLINE_CACHE=cache, RSD_ROOFLINE_TAG=tag)
    res = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(work)], env=env, capture_output=True, text=True,
                         cwd=tree)
    if res.returncode != 0:
        raise RuntimeError(f"{tag}: {res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def checkout(rev: str, dest: str) -> str:
    data = subprocess.run(["git", "-C", ROOT, "archive", rev, "rsd_kernels"], capture_output=True, check=True).stdout
    path = os.path.join(dest, "archive.tar")
    with open(path, "wb") as f:
        f.write(data)
    with tarfile.open(path) as t:
        t.extractall(dest)
    return dest


def shape_text(op, s):
    if op == "tree_attention":
        return f"B={s['B']} {s['Hq']}/{s['Hkv']} prefix {s['prefix']}"
    dt = s.get("dtype", "bf16")
    if op == "verify_tree":
        return f"{s['mode']} B={s['B']} V={s['V']} {dt}"
    return f"{s['R']}x{s['V']} k={s['k']} {dt}"


def kernel_text(k):
    waves = k["programs"] / (SMS * max(1, k["ctas_per_sm"]))
    return (f"{k['kernel'].strip('_')} {k['programs']} prog ({waves:.2f} waves @{k['ctas_per_sm']}/SM), "
            f"{k['regs']} regs, {k['spill_bytes']} B spill, {k['smem'] // 1024} KB smem")


def table(before, after):
    lines = ["| op | shape | bytes | ideal us | before: kernels (programs vs 132 SMs; sm_90 regs / spills / smem) | "
             "after |", "| --- | --- | --- | --- | --- | --- |"]
    by = {(r["op"], json.dumps(r["shape"], sort_keys=True)): r for r in before or []}
    for r in after:
        key = (r["op"], json.dumps(r["shape"], sort_keys=True))
        b = by.get(key)
        nb = nbytes(r["op"], r["shape"])
        lines.append(f"| {r['op']} | {shape_text(r['op'], r['shape'])} | {nb / 1e6:.1f} MB | {nb / BW * 1e6:.2f} | "
                     + ("<br>".join(kernel_text(k) for k in b["kernels"]) if b else "-") + " | "
                     + "<br>".join(kernel_text(k) for k in r["kernels"]) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="7ceeaa2", help="git revision of the 'before' sources ('' to skip)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--cache", default=os.path.join(HERE, ".roofline_cache.json"))
    ap.add_argument("--only", default="attention,verify,sampling")
    args = ap.parse_args(argv)
    families = {"attention": [("tree_attention", s) for s in ATTENTION],
                "verify": [("verify_tree", s) for s in VERIFY],
                "sampling": [("sample_without_replacement", s) for s in SAMPLING]}
    work = [w for f in args.only.split(",") for w in families[f]]
    after = run(ROOT, "after", work, args.cache)
    before = None
    if args.before:
        with tempfile.TemporaryDirectory() as tmp:
            before = run(checkout(args.before, tmp), f"before:{args.before}", work, args.cache)
    print("\n".join(table(before, after)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"before": before, "after": after, "before_rev": args.before}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
