"""Run the microbenchmarks of ``bench/bench_*.py`` without pytest-benchmark, under a deadline.

    python bench/run_bench.py --out bench.json [--deadline-s 120] [bench/bench_attention.py ...]

The same ``test_*`` functions ``pytest bench/ --benchmark-only`` collects, with their
``@pytest.mark.parametrize`` cases and skip marks (in the order: every file's first shape, its
goal shape, then every file's second shape, ...; within a shape, modes then backends), are called with a small stand-in for pytest-benchmark's
``benchmark`` fixture (``pedantic``, ``stats.stats.median``, ``extra_info``). The JSON written has
pytest-benchmark's layout (``benchmarks``: ``name``, ``stats.median``, ``extra_info``; what
``bench/report.py`` reads) plus ``skipped`` and ``errors``, and is rewritten after every case:
a run stopped by a timeout keeps the cases that finished. No case starts after ``--deadline-s``;
the cases left are listed under ``skipped`` ("not run: deadline"). One failing case is recorded
and the rest still run. gpu_check.sh uses this runner so that it needs neither pytest-benchmark
on the device image (nor pytest: a stand-in declares the parametrisations) nor a clean exit to
print the rows measured.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import itertools
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ("shape", "mode", "backend")  # outermost first


class _Stats:
    def __init__(self):
        self.median = float("nan")
        self.data = []


class Benchmark:
    """The part of pytest-benchmark's fixture the bench files use."""

    def __init__(self):
        self.extra_info = {}
        self.stats = type("S", (), {})()
        self.stats.stats = _Stats()

    def pedantic(self, fn, rounds=1, iterations=1, warmup_rounds=0, args=(), kwargs=None):
        kwargs = kwargs or {}
        for _ in range(warmup_rounds):
            fn(*args, **kwargs)
        times, result = [], None
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(iterations):
                result = fn(*args, **kwargs)
            times.append((time.perf_counter() - t) / iterations)
        times.sort()
        n = len(times)
        self.stats.stats.data = times
        self.stats.stats.median = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
        return result

    def __call__(self, fn, *args, **kwargs):
        return self.pedantic(fn, rounds=5, args=args, kwargs=kwargs)


def _pytest_shim():
    """A stand-in ``pytest`` (``mark.<name>``, ``param``) when the image has none: the bench files only
    declare parametrisations and skip marks with it, which :func:`cases` reads."""
    try:
        import pytest  # noqa: F401

        return
    except ImportError:
        pass
    import types

    class ParameterSet:
        def __init__(self, values, marks, id):
            self.values, self.marks, self.id = values, marks, id

    class Mark:
        def __init__(self, name, args, kwargs):
            self.name, self.args, self.kwargs = name, args, kwargs

        def __call__(self, func):
            func.pytestmark = list(getattr(func, "pytestmark", [])) + [self]
            return func

    class MarkGen:
        def __getattr__(self, name):
            return lambda *a, **k: Mark(name, a, k)

    mod = types.ModuleType("pytest")
    mod.mark = MarkGen()
    mod.param = lambda *values, marks=(), id=None: ParameterSet(
        values, tuple(marks) if isinstance(marks, (list, tuple)) else (marks,), id)
    sys.modules["pytest"] = mod


def _load(path):
    _pytest_shim()
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _param(value, argname, i, ids):
    """(value, id, skip reason or None) of one parametrize entry (a ``pytest.param`` or a plain value)."""
    marks, pid = (), None
    if type(value).__name__ == "ParameterSet":
        marks, pid = value.marks, value.id
        value = value.values[0]
    if pid is None:
        if callable(ids):
            pid = ids(value)
        elif isinstance(ids, (list, tuple)):
            pid = ids[i]
        else:
            pid = str(value) if isinstance(value, (str, int, float)) else f"{argname}{i}"
    why = None
    for m in marks:
        if m.name == "skip":
            why = m.kwargs.get("reason", m.args[0] if m.args else "skipped")
        elif m.name == "skipif" and (m.args[0] if m.args else m.kwargs.get("condition")):
            why = m.kwargs.get("reason", "skipped")
    return value, pid, why


def cases(mod):
    """``[(name, function, kwargs, skip reason, shape rank)]`` of a bench module, shape outermost;
    the rank is the shape's index in its parametrize list (0 for unparametrised shapes)."""
    out = []
    for fname in sorted(n for n in dir(mod) if n.startswith("test_")):
        fn = getattr(mod, fname)
        axes = []
        for m in getattr(fn, "pytestmark", []):
            if m.name != "parametrize":
                continue
            argname, values = m.args[0], m.args[1]
            if "," in argname:
                raise ValueError(f"{fname}: multi-name parametrize is not supported by run_bench")
            axes.append((argname, [_param(v, argname, i, m.kwargs.get("ids")) for i, v in enumerate(values)]))
        axes.sort(key=lambda a: ORDER.index(a[0]) if a[0] in ORDER else len(ORDER))
        for combo in itertools.product(*[list(enumerate(vals)) for _, vals in axes]):
            kwargs = {name: v[1][0] for (name, _), v in zip(axes, combo)}
            ids = "-".join(v[1][1] for v in combo)
            why = next((v[1][2] for v in combo if v[1][2]), None)
            rank = next((v[0] for (name, _), v in zip(axes, combo) if name == "shape"), 0)
            out.append((f"{fname}[{ids}]" if ids else fname, fn, kwargs, why, rank))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="bench files (default: bench/bench_*.py, attention first)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline-s", type=float, default=float("inf"), help="start no case after this many seconds")
    args = ap.parse_args(argv)
    files = args.files or sorted(glob.glob(os.path.join(HERE, "bench_*.py")),
                                 key=lambda p: (0 if "attention" in p else 1 if "verify" in p else 2, p))
    t0 = time.perf_counter()
    data = {"runner": "bench/run_bench.py", "benchmarks": [], "skipped": [], "errors": []}

    def save():
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, args.out)

    save()
    todo = []
    for fi, path in enumerate(files):
        try:
            todo += [(rank, fi, os.path.basename(path), *case[:4]) for *case, rank in cases(_load(path))]
        except Exception as exc:
            data["errors"].append({"name": os.path.basename(path), "error": f"{type(exc).__name__}: {exc}"})
            print(f"ERROR {path}: {type(exc).__name__}: {exc}", flush=True)
    save()
    # every file's first shape (its goal shape) before any file's second one, and so on; within a
    # rank, FlexAttention (a torch.compile per shape, tens of seconds) after the other files' cases
    todo.sort(key=lambda c: (c[0], c[5].get("backend") == "flex", c[1]))
    for _, _, fname, name, fn, kwargs, why in todo:
        full = f"{fname}::{name}"
        if why:
            data["skipped"].append({"name": full, "reason": why})
            continue
        if time.perf_counter() - t0 > args.deadline_s:
            data["skipped"].append({"name": full, "reason": "not run: deadline"})
            continue
        b = Benchmark()
        t = time.perf_counter()
        try:
            fn(benchmark=b, **kwargs)
            data["benchmarks"].append({"name": full, "stats": {"median": b.stats.stats.median},
                                       "extra_info": b.extra_info, "wall_s": time.perf_counter() - t})
            print(f"ok    {full} {1e6 * b.extra_info.get('time_s', b.stats.stats.median):.1f} us", flush=True)
        except Exception as exc:
            data["errors"].append({"name": full, "error": f"{type(exc).__name__}: {exc}",
                                   "traceback": traceback.format_exc(limit=3)})
            print(f"ERROR {full}: {type(exc).__name__}: {exc}", flush=True)
        save()
    data["elapsed_s"] = time.perf_counter() - t0
    save()
    print(f"{len(data['benchmarks'])} measured, {len(data['skipped'])} skipped, {len(data['errors'])} errors "
          f"in {data['elapsed_s']:.1f}s")
    return 1 if data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
