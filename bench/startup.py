"""Start-up of ``rsd generate`` on the embedded pair, cold (empty model cache) and warm.

Two measurements, each in fresh interpreters (imports are part of the cost):

* **phases** -- a child process does what ``rsd generate`` does, step by step, and times each step
  (wall clock and the process's CPU time): importing torch; importing transformers and the rsd modules
  the command uses; importing transformers' model code (Llama, auto classes: ``rsd generate`` pays it
  inside the target's loading); loading the target (cold: the GGUF conversion, which also writes the
  cache; warm: from the cache); loading the EAGLE draft; the prefill and the first block, up to the
  moment its tokens reach the ``on_block`` callback;
* **command** -- the real command (``python -m rsd.cli generate PROMPT --max-new-tokens 8
  --no-baseline``, stdout a pipe): the time to the first byte of streamed text on stdout, and to exit.

Cold runs use a fresh ``RSD_CACHE_DIR`` each; warm runs share one that a first (untimed) run filled.
Usage::

    python bench/startup.py --runs 3 [--json out.json]

The machine may be shared: compare the CPU column, and medians over several runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "Explain why the sky is blue."
PHASES = ("import_torch", "import_rest", "import_modeling", "load_target", "load_draft", "first_block")


def child(prompt: str) -> None:
    """Runs in a fresh interpreter: the steps of ``rsd generate``, timed (one JSON line on stdout)."""
    out, t = {}, [time.perf_counter(), time.process_time()]

    def mark(name):
        now = [time.perf_counter(), time.process_time()]
        out[name] = {"wall_s": now[0] - t[0], "cpu_s": now[1] - t[1]}
        t[:] = now

    import torch

    mark("import_torch")
    import transformers  # noqa: F401

    import rsd.cli.generate  # noqa: F401
    from rsd.engine.adapter import ModelAdapter
    from rsd.engine.generate import generate
    from rsd.engine.models import eos_ids, load_draft, load_target, prompt_ids

    mark("import_rest")
    import transformers.models.auto.modeling_auto  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    mark("import_modeling")
    try:
        from rsd.cli.console import library_output
    except ImportError:  # --before: a tree without it (nor the model cache, nor on_block)
        library_output = None
    with library_output(False) if library_output else contextlib.nullcontext(print) as log:
        tgt = load_target("embedded", log=log) if library_output else load_target("embedded")
        mark("load_target")
        drf = load_draft("embedded-eagle", tgt, log=log)
        mark("load_draft")
        ids = prompt_ids(tgt.tokenizer, prompt, True)
        target, draft = ModelAdapter(tgt.model), ModelAdapter(drf.model)
        kw = dict(eos_token_id=eos_ids(tgt.tokenizer, tgt.model), seed=0)
        first = []

        def on_block(*_):
            if not first:
                mark("first_block")
                first.append(1)

        hook = dict(on_block=on_block) if library_output else dict(progress=on_block)
        res = generate(target, draft, ids, "rsd-s", budget=10, max_new_tokens=8, **hook, **kw)
    out["prefill_s"] = res.prefill_s
    out["torch_threads"] = torch.get_num_threads()
    print(json.dumps(out))


def run_child(env, prompt):
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--prompt", prompt], env=env,
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def run_command(env, prompt):
    """Wall seconds to the first byte on stdout and to exit of the real command."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "rsd.cli", "generate", prompt, "--max-new-tokens", "8",
                          "--no-baseline"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.read(1)
    t1 = time.perf_counter()
    rest, err = p.communicate(timeout=900)
    t2 = time.perf_counter()
    if p.returncode != 0 or not first:
        raise RuntimeError(err.decode()[-3000:])
    return {"first_byte_s": t1 - t0, "exit_s": t2 - t0, "stdout": (first + rest).decode(), "stderr": err.decode()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--no-cold", action="store_true", help="warm runs only (no conversions)")
    ap.add_argument("--json", default=None, metavar="PATH")
    ap.add_argument("--before", default=None, metavar="DIR",
                    help="measure the code in DIR instead (e.g. `git archive f69c6cf rsd_kernels python | tar -x -C DIR`: "
                         "the tree before the model cache; its command prints the text at the end)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.prompt)
        return 0
    tree = os.path.abspath(args.before) if args.before else REPO
    base = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                PYTHONPATH=os.pathsep.join([tree, os.path.join(tree, "python"), os.environ.get("PYTHONPATH", "")]))
    root = tempfile.mkdtemp(prefix="rsd-startup-")
    results = {"cold": {"phases": [], "command": []}, "warm": {"phases": [], "command": []}}
    try:
        warm_env = dict(base, RSD_CACHE_DIR=os.path.join(root, "warm"))
        run_child(warm_env, args.prompt)  # fills the warm cache (untimed)
        for i in range(args.runs):
            if not args.no_cold and not args.before:
                env = dict(base, RSD_CACHE_DIR=os.path.join(root, f"cold-p{i}"))
                results["cold"]["phases"].append(run_child(env, args.prompt)[0])
                env = dict(base, RSD_CACHE_DIR=os.path.join(root, f"cold-c{i}"))
                results["cold"]["command"].append(run_command(env, args.prompt))
                shutil.rmtree(os.path.join(root, f"cold-p{i}"), ignore_errors=True)
                shutil.rmtree(os.path.join(root, f"cold-c{i}"), ignore_errors=True)
            results["warm"]["phases"].append(run_child(warm_env, args.prompt)[0])
            results["warm"]["command"].append(run_command(warm_env, args.prompt))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.before:  # no cache there: every run is a conversion
        results = {"before": results["warm"]}
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def report(results) -> None:
    med = statistics.median
    print(f"{'':8} {'phase':14} {'wall s (median)':>16} {'cpu s (median)':>15}   runs")
    for kind in results:
        runs = results[kind]["phases"]
        if not runs:
            continue
        total_w = total_c = 0.0
        for ph in PHASES:
            w, c = med(r[ph]["wall_s"] for r in runs), med(r[ph]["cpu_s"] for r in runs)
            total_w, total_c = total_w + w, total_c + c
            print(f"{kind:8} {ph:14} {w:16.2f} {c:15.2f}   " + " ".join(f"{r[ph]['wall_s']:.2f}" for r in runs))
        print(f"{kind:8} {'first token':14} {total_w:16.2f} {total_c:15.2f}   (sum of the medians; "
              f"prefill alone {med(r['prefill_s'] for r in runs):.2f} s)")
        cmd = results[kind]["command"]
        print(f"{kind:8} {'command':14} first byte {med(c['first_byte_s'] for c in cmd):.2f} s, exit "
              f"{med(c['exit_s'] for c in cmd):.2f} s   " + " ".join(f"{c['first_byte_s']:.2f}" for c in cmd))


if __name__ == "__main__":
    sys.exit(main())
