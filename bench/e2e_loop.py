"""End-to-end benchmark of the decoding loop at the seed's model shapes, and a projected token-rate table.

    python bench/e2e_loop.py measure --out DIR            # GPU: Llama-2-7B/13B-shaped targets, 115M draft
    python bench/e2e_loop.py measure --tiny --out DIR     # CPU: the same code path at tiny shapes (CI)
    python bench/e2e_loop.py project DIR/e2e.json --out DIR/projected.json   # redo the projection anywhere
    rsd plot DIR/projected.json                           # the seed's layout

**Models.** Random weights in bfloat16, built from ``LlamaConfig`` (no downloads) directly on
the device (``with torch.device(...)``: transformers' own normal(0, 0.02) init runs there, seconds
for 7B on a GPU). Vocabulary 32000, untied head, context 4096:

* ``llama2-7b``: hidden 4096, 32 layers, 32 heads (MHA), intermediate 11008 (6.74e9 parameters);
* ``llama2-13b``: hidden 5120, 40 layers, 40 heads, intermediate 13824 (13.0e9);
* ``draft-115m``: hidden 768, 7 layers, 12 heads (head size 64), intermediate 3072: 115,223,808
  parameters (embedding and head 2 x 24.6M, 7 x 9.44M in the layers).
* ``--tiny`` (CI): target hidden 128 / 2 layers / 2 heads, draft hidden 64 / 1 layer, same vocabulary.

**What is timed.** For AR and, per method, the configurations at budgets 6, 10, 14, 21, 30
(``rsd_kernels.default_config``: one per method and budget, 20 in all, the configurations the
committed CPU evaluation measured; ``--configs capped --max-configs N`` adds more), on a fixed random
prompt (``--prompt-len``, default 512 tokens): ``rsd.engine.loop.Decoder`` ``prefill`` then ``--warmup``
(1) untimed, ``--blocks`` (5; tiny 2) timed and ``--unsynced-blocks`` (2) timed ``step()`` calls. Per block it records every ``*_s`` field of the
loop's ``BlockStats`` (today ``draft_s``, ``target_s`` = the target verification forward,
``verify_s``; a ``cache_s`` or other part the engine reports is picked up by name), the block's wall
time and ``other_s`` = wall - sum of the parts (work the loop does not attribute, e.g. asynchronous
cache compaction still running when ``step`` returns).

**Synchronisation.** CUDA is asynchronous, so the loop's ``perf_counter`` split would charge a
forward's GPU time to whichever later part first waits for it. Forward hooks on each model (a
pre-hook on the model and post-hooks on the model and on its ``lm_head``) call
``torch.cuda.synchronize()`` before and after every forward, and the benchmark synchronises after
each ``step()``; so ``target_s`` / the draft forwards inside ``draft_s`` are complete GPU times, and
the block wall time is exact. The per-forward synchronisation costs a few microseconds and removes any
overlap of host work with the GPU (the loop itself waits on the GPU whenever it reads tokens back,
so there is little), so after the ``--blocks`` synchronised blocks ``--unsynced-blocks`` more run
with the hooks' synchronisation off (one synchronisation after ``step()`` only): their median wall
time, ``wall_unsynced_s``, is the block time the projection uses; the split comes from the
synchronised ones. On the CPU the hooks run and only count calls.

**Acceptance pattern.** Random weights make acceptance meaningless, so it is fixed: decoding is
greedy and every configuration is timed twice, (a) ``none``: the models as built (draft and target
argmax agree with probability ~1/32000: 0 tokens accepted per block) and (b) ``full``: a hook on
both ``lm_head`` outputs adds 1e4 to one token's logit, so draft and target always agree and every
block accepts a full root-to-leaf path (depth L). The measured mean accepted lengths of both are
recorded; the block time at any accepted length ``a`` in between is the linear interpolation.

**Projection** (``project``; *a projection, not a measurement*): for each configuration with a
block efficiency tau measured on the CPU with the embedded pair (``docs/figures/trained_*.json``,
``rsd eval``; accepted length a = accepted tokens per block from the same file),

    projected token rate = (tau / block_time(a)) / (1 / ar_step_time) = tau * ar_step_time / block_time(a)

i.e. tokens per second of the method over target-only decoding's, both from GPU times at the seed's
shapes. MBSU is recomputed with this pair's parameter ratio r = draft / target parameters read per
forward; accuracy is copied from the CPU run (every method is exact). It assumes the block
efficiency of the 135M embedded pair carries over to a Llama-2 pair, which it does not in general:
the seed's Llama pairs reach tau 2-4, the embedded pair 1.3-2.5. The output is an ``rsd eval``
format file (``runs`` with ``model``, ``dataset``, ``method``, ``config``, ``budget``,
``block_efficiency``, ``mbsu``, ``token_rate``, ``accuracy``) that ``rsd plot`` draws.

The GPU run of this benchmark is still owed: it has run only at ``--tiny`` shapes on a CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import glob
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, os.path.join(ROOT, "python")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

SCHEMA = "rsd-e2e/1"
BUDGETS = (6, 10, 14, 21, 30)
METHODS = ("sd", "spectr", "rsd-c", "rsd-s")
COMMON = dict(vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=None)
SHAPES = {
    "llama2-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      intermediate_size=11008),
    "llama2-13b": dict(hidden_size=5120, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                       intermediate_size=13824),
    "draft-115m": dict(hidden_size=768, num_hidden_layers=7, num_attention_heads=12, num_key_value_heads=12,
                       intermediate_size=3072),
    "tiny-target": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                        intermediate_size=256),
    "tiny-draft": dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
                       intermediate_size=128),
}
LABELS = {"llama2-7b": "Llama 2-7B shape", "llama2-13b": "Llama 2-13B shape", "tiny-target": "tiny target"}
FORCED_TOKEN = 7  # the token the "full" pattern makes both models predict
PATTERNS = ("none", "full")
DEFAULT_EVALS = tuple(sorted(glob.glob(os.path.join(ROOT, "docs", "figures", "trained_*.json"))))
PROJECTION_NOTE = ("PROJECTION, not a measurement: token rate = tau * ar_step_time / block_time(a), with tau and "
                   "the accepted length a per block measured on the CPU with the embedded SmolLM2 pair "
                   "(rsd eval) and the block and AR step times measured with random-weight models "
                   "(bench/e2e_loop.py); block_time(a) interpolates linearly between the "
                   "times measured at 0 accepted tokens and at a full path.")


# ---------------------------------------------------------------- models

def build_model(shape: str, device, dtype):
    """A random-weight Llama causal LM of ``SHAPES[shape]``, built on ``device`` (no CPU detour)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**COMMON, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval().requires_grad_(False)


def param_counts(model) -> dict:
    from rsd.eval.runner import count_params

    return {"total": count_params(model, read_per_call=False), "read_per_call": count_params(model)}


class Hooks:
    """Synchronising hooks (CUDA: ``torch.cuda.synchronize`` around every forward) and the optional
    logit bias of the ``full`` acceptance pattern, on a model's top module and its ``lm_head``."""

    def __init__(self, model, device):
        import torch

        self._sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
        self.calls = 0
        self.syncs = 0
        self.force = False
        self.sync_on = True
        head = model.get_output_embeddings()
        self.handles = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post),
                        head.register_forward_hook(self._head)]

    def sync(self):
        if self.sync_on:
            self.syncs += 1
            self._sync()

    def _pre(self, module, args):
        self.sync()

    def _post(self, module, args, out):
        self.sync()

    def _head(self, module, args, out):
        self.calls += 1
        if self.force:
            out[..., FORCED_TOKEN] += 1e4
        self.sync()

    def remove(self):
        for h in self.handles:
            h.remove()


# ---------------------------------------------------------------- measuring

def plan(methods=METHODS, budgets=BUDGETS, configs="default", max_configs=None):
    """``[(method, config or None)]``: AR first, then each method's configurations per budget."""
    from rsd.eval.runner import grid_configs

    out = [("ar", None)]
    for m in methods:
        for b in budgets:
            out += [(m, c) for c in grid_configs(m, b, mode=configs, max_configs=max_configs)]
    return out


def _sync_fn(device):
    import torch

    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def time_blocks(target, draft, prompt, method, config, *, blocks, warmup, attention, backend, device, unsynced=0,
                set_sync=lambda on: None):
    """Prefill once, then ``warmup`` + ``blocks`` + ``unsynced`` greedy ``Decoder.step`` calls; the
    timed blocks' records (``set_sync(False)`` for the last ``unsynced``, marked ``"unsynced": True``)."""
    from rsd.engine.loop import Decoder

    sync = _sync_fn(device)
    dec = Decoder(target, draft if method != "ar" else None, method, config, temperature=0.0, seed=0,
                  attention=attention, backend=backend)
    sync()
    t = time.perf_counter()
    dec.prefill(prompt)
    sync()
    prefill_s = time.perf_counter() - t
    recs = []
    for i in range(warmup + blocks + unsynced):
        if hasattr(dec, "fits") and not dec.fits():
            break
        set_sync(i < warmup + blocks)
        t = time.perf_counter()
        new, stats = dec.step()
        sync()
        wall = time.perf_counter() - t
        if i < warmup:
            continue
        fields = dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else dict(vars(stats))
        parts = {k: float(v) for k, v in fields.items() if k.endswith("_s") and isinstance(v, (int, float))}
        recs.append({"wall_s": wall, "accepted": int(fields.get("accepted", len(new) - 1)),
                     "committed": len(new), "draft_calls": int(fields.get("draft_calls", 0)), **parts,
                     "other_s": wall - sum(parts.values()), "unsynced": i >= warmup + blocks})
    set_sync(True)
    del dec
    return prefill_s, recs


def summarize_blocks(recs) -> dict:
    """Medians of every timed field over the synchronised blocks, the median wall time of the
    unsynchronised ones (``wall_unsynced_s``), and the mean accepted length."""
    synced = [r for r in recs if not r.get("unsynced")]
    if not synced:
        return {"blocks": 0}
    keys = [k for k in synced[0] if k.endswith("_s")]
    med = {k: _median([r[k] for r in synced]) for k in keys}
    free = [r["wall_s"] for r in recs if r.get("unsynced")]
    if free:
        med["wall_unsynced_s"] = _median(free)
    return {"blocks": len(synced), "unsynced_blocks": len(free),
            "accepted_mean": sum(r["accepted"] for r in recs) / len(recs), "draft_calls": synced[0]["draft_calls"],
            **med}


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def measure(args) -> dict:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    targets = args.targets or (["tiny-target"] if args.tiny else ["llama2-7b", "llama2-13b"])
    draft_shape = args.draft or ("tiny-draft" if args.tiny else "draft-115m")
    budgets = tuple(args.budgets or (BUDGETS if not args.tiny else (6, 10)))
    blocks = args.blocks if args.blocks is not None else (2 if args.tiny else 5)
    warmup = args.warmup if args.warmup is not None else 1
    prompt_len = args.prompt_len if args.prompt_len is not None else (24 if args.tiny else 512)
    deadline = time.perf_counter() + args.time_budget_s
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "e2e.json")
    env = {"device": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu",
           "torch": torch.__version__, "dtype": args.dtype, "attention": args.attention, "backend": args.backend}
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    res = {"schema": SCHEMA, "environment": env, "tiny": bool(args.tiny),
           "settings": {"targets": targets, "draft": draft_shape, "budgets": list(budgets), "blocks": blocks,
                        "warmup": warmup, "prompt_len": prompt_len, "configs": args.configs,
                        "max_configs": args.max_configs, "patterns": list(args.patterns),
                        "forced_token": FORCED_TOKEN, "time_budget_s": args.time_budget_s},
           "models": {}, "results": [], "skipped": []}

    def save():
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, path)

    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(10, COMMON["vocab_size"], (prompt_len,), generator=gen).tolist()
    todo = plan(budgets=budgets, configs=args.configs, max_configs=args.max_configs)
    log = args.log or (lambda m: print(m, file=sys.stderr, flush=True))

    save()
    t = time.perf_counter()
    try:
        draft = build_model(draft_shape, device, dtype)
    except Exception as exc:  # recorded, so the table says why there are no rows
        res["error"] = f"building the draft {draft_shape}: {type(exc).__name__}: {exc}"
        log(f"e2e: {res['error']}")
        save()
        return res
    res["models"][draft_shape] = {"role": "draft", **SHAPES[draft_shape], "params": param_counts(draft),
                                  "build_s": time.perf_counter() - t}
    dhooks = Hooks(draft, device)
    for tname in targets:
        if time.perf_counter() > deadline:
            res["skipped"].append({"target": tname, "reason": "time budget spent before building it"})
            save()
            continue
        t = time.perf_counter()
        try:
            target = build_model(tname, device, dtype)
            _sync_fn(device)()
        except Exception as exc:
            res["skipped"].append({"target": tname, "reason": f"build failed: {type(exc).__name__}: {exc}"})
            log(f"e2e: {tname}: {res['skipped'][-1]['reason']}")
            save()
            continue
        build_s = time.perf_counter() - t
        res["models"][tname] = {"role": "target", **SHAPES[tname], "params": param_counts(target), "build_s": build_s}
        log(f"e2e: {tname} built in {build_s:.1f}s ({res['models'][tname]['params']['total'] / 1e9:.3f}e9 params)")
        thooks = Hooks(target, device)
        for method, config in todo:
            for pattern in (("none",) if method == "ar" else tuple(args.patterns)):
                rec = {"target": tname, "method": method, "config": None if config is None else str(config),
                       "budget": None if config is None else config.budget,
                       "depth": 1 if config is None else config.depth, "pattern": pattern}
                if time.perf_counter() > deadline:
                    res["skipped"].append({**rec, "reason": "time budget spent"})
                    continue
                dhooks.force = thooks.force = pattern == "full"
                try:
                    def set_sync(on):
                        dhooks.sync_on = thooks.sync_on = on

                    prefill_s, recs = time_blocks(target, draft, prompt, method, config, blocks=blocks, warmup=warmup,
                                                  attention=args.attention, backend=args.backend, device=device,
                                                  unsynced=args.unsynced_blocks, set_sync=set_sync)
                    rec.update(prefill_s=prefill_s, **summarize_blocks(recs), per_block=recs)
                except Exception as exc:  # one failing configuration must not lose the others
                    rec["error"] = f"{type(exc).__name__}: {exc}"
                    log(f"e2e: {tname} {method} {config} {pattern}: {rec['error']}")
                res["results"].append(rec)
                save()
        res["models"][tname].update(head_calls=thooks.calls, syncs=thooks.syncs)
        thooks.remove()
        del target
        gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    res["models"][draft_shape].update(head_calls=dhooks.calls, syncs=dhooks.syncs)
    dhooks.remove()
    res["elapsed_s"] = args.time_budget_s - (deadline - time.perf_counter())
    save()
    return res


# ---------------------------------------------------------------- reporting and projection

def _ms(x):
    return "-" if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else f"{1e3 * x:.2f}"


def format_blocks(res) -> str:
    """Per-configuration block time split (medians, milliseconds)."""
    parts = []
    for r in res["results"]:
        for k in r:
            if k.endswith("_s") and k not in ("wall_s", "wall_unsynced_s", "prefill_s", "other_s") and k not in parts:
                parts.append(k)
    head = f"{'target':12s} {'method':6s} {'config':14s} {'pattern':7s} {'acc':>5s} {'block_ms':>9s} {'unsync_ms':>9s} " + \
        " ".join(f"{p[:-2] + '_ms':>10s}" for p in parts + ["other_s"])
    lines = [head]
    for r in res["results"]:
        if "error" in r:
            lines.append(f"{r['target']:12s} {r['method']:6s} {str(r['config']):14s} {r['pattern']:7s} ERROR {r['error'][:80]}")
            continue
        lines.append(f"{r['target']:12s} {r['method']:6s} {str(r['config'] or '-'):14s} {r['pattern']:7s} "
                     f"{r.get('accepted_mean', float('nan')):5.2f} {_ms(r.get('wall_s')):>9s} "
                     f"{_ms(r.get('wall_unsynced_s')):>9s} "
                     + " ".join(f"{_ms(r.get(p)):>10s}" for p in parts + ["other_s"]))
    for s in res.get("skipped", []):
        lines.append(f"skipped: {s}")
    return "\n".join(lines)


def block_time(r: dict) -> float:
    """The block time of a record: unsynchronised wall time where measured, else the synchronised one."""
    return r.get("wall_unsynced_s", r["wall_s"])


def block_time_at(full: dict | None, none: dict, accepted: float) -> float:
    """Block time at ``accepted`` tokens per block: linear between the two measured patterns."""
    if full is None or "wall_s" not in full:
        return block_time(none)
    a0, a1 = none["accepted_mean"], full["accepted_mean"]
    if a1 - a0 < 1e-9:
        return block_time(none)
    f = min(max((accepted - a0) / (a1 - a0), 0.0), 1.0)
    return block_time(none) + f * (block_time(full) - block_time(none))


def load_evals(paths) -> list:
    runs = []
    for p in paths:
        with open(p) as f:
            runs += [r for r in json.load(f).get("runs", []) if r.get("method") in METHODS]
    return runs


def project(res: dict, eval_runs: list) -> dict:
    """The projected results (``rsd eval`` format, see the module docstring)."""
    draft_shape = res["settings"]["draft"]
    dparams = res["models"][draft_shape]["params"]["read_per_call"]
    by_key = {}
    for r in res["results"]:
        if "error" not in r and r.get("blocks"):
            by_key[(r["target"], r["method"], r["config"], r["pattern"])] = r
    env = res.get("environment") or {}
    note = (f"{PROJECTION_NOTE} Block times here: {env.get('device', '?')}, targets "
            f"{', '.join(res['settings']['targets'])}, draft {draft_shape}"
            + (" (tiny shapes: a test of the code path, not the seed's shapes)." if res.get("tiny") else "."))
    out = {"schema": "rsd-eval/1", "projection": note, "source": {"e2e": res.get("environment"),
           "evals": sorted({r.get("model", "?") for r in eval_runs})},
           "datasets_order": [], "runs": [], "ar": [], "peer": [], "missing": []}
    budgets = set(res["settings"]["budgets"])
    order = {d: i for i, d in enumerate(("wmt", "xsum", "dolly"))}
    eval_runs = sorted((r for r in eval_runs if r.get("budget") in budgets),
                       key=lambda r: (order.get(r.get("dataset"), 9), r.get("dataset", ""), METHODS.index(r["method"]),
                                      r["budget"]))
    for tname in res["settings"]["targets"]:
        ar = by_key.get((tname, "ar", None, "none"))
        if ar is None or tname not in res["models"]:
            out["missing"].append({"target": tname, "reason": "no AR step time"})
            continue
        ratio = dparams / res["models"][tname]["params"]["read_per_call"]
        label = LABELS.get(tname, tname) + " (projected)"
        for ev in eval_runs:
            none = by_key.get((tname, ev["method"], ev["config"], "none"))
            if none is None:
                out["missing"].append({"target": tname, "dataset": ev.get("dataset"), "config": ev["config"],
                                       "reason": "no GPU block time for this configuration"})
                continue
            tau = ev.get("block_efficiency")
            if not isinstance(tau, (int, float)) or not math.isfinite(tau):
                continue
            acc_len = ev.get("accepted_per_block", tau - 1.0)
            bt = block_time_at(by_key.get((tname, ev["method"], ev["config"], "full")), none, acc_len)
            ds = ev.get("dataset", "?")
            if ds not in out["datasets_order"]:
                out["datasets_order"].append(ds)
            out["runs"].append({
                "model": label, "dataset": ds, "method": ev["method"], "config": ev["config"],
                "budget": ev["budget"], "depth": ev.get("depth", none["depth"]),
                "block_efficiency": tau, "accepted_per_block": acc_len,
                "mbsu": tau / (1 + ratio * ev.get("depth", none["depth"])), "param_ratio": ratio,
                "token_rate": tau * block_time(ar) / bt, "accuracy": ev.get("accuracy"),
                "block_time_s": bt, "ar_step_s": block_time(ar), "projected": True,
                "tau_source": f"{ev.get('model', '?')} on {ds} (CPU, rsd eval)"})
    return out


def format_projection(proj: dict) -> str:
    lines = [proj["projection"], "",
             f"{'model':30s} {'dataset':7s} {'method':6s} {'budget':>6s} {'config':14s} {'tau(cpu)':>8s} "
             f"{'acc/blk':>7s} {'block_ms':>9s} {'ar_ms':>7s} {'MBSU':>6s} {'rate':>6s}"]
    for r in proj["runs"]:
        lines.append(f"{r['model']:30s} {r['dataset']:7s} {r['method']:6s} {r['budget']:6d} {r['config']:14s} "
                     f"{r['block_efficiency']:8.2f} {r['accepted_per_block']:7.2f} {_ms(r['block_time_s']):>9s} "
                     f"{_ms(r['ar_step_s']):>7s} {r['mbsu']:6.2f} {r['token_rate']:6.2f}")
    for m in proj["missing"][:10]:
        lines.append(f"missing: {m}")
    if len(proj["missing"]) > 10:
        lines.append(f"... {len(proj['missing']) - 10} more missing")
    return "\n".join(lines)


def _write_projection(res, eval_paths, out_path, plot_prefix=None):
    proj = project(res, load_evals(eval_paths))
    with open(out_path, "w") as f:
        json.dump(proj, f, indent=1)
    print(format_projection(proj))
    print(f"projected results (rsd eval format): {out_path}")
    if plot_prefix and proj["runs"]:
        try:
            from rsd.eval.plot import plot_results

            for p in plot_results(proj, plot_prefix, title="PROJECTED token rate: GPU block times x CPU block "
                                                           "efficiencies (bench/e2e_loop.py)"):
                print(f"figure: {p}")
        except Exception as exc:  # matplotlib missing on the device image: plot later with `rsd plot`
            print(f"(no figure: {type(exc).__name__}: {exc}; run `rsd plot {out_path}` elsewhere)")
    return proj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="time the loop's blocks (then project)")
    m.add_argument("--out", required=True, help="folder for e2e.json, projected.json (and the figure)")
    m.add_argument("--tiny", action="store_true", help="tiny shapes (CI, CPU)")
    m.add_argument("--targets", nargs="+", choices=sorted(SHAPES), default=None)
    m.add_argument("--draft", choices=sorted(SHAPES), default=None)
    m.add_argument("--budgets", nargs="+", type=int, default=None)
    m.add_argument("--configs", choices=("default", "capped", "all"), default="default")
    m.add_argument("--max-configs", type=int, default=None)
    m.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS))
    m.add_argument("--blocks", type=int, default=None, help="timed blocks per configuration (default 5; tiny 2)")
    m.add_argument("--warmup", type=int, default=None, help="untimed blocks first (default 1)")
    m.add_argument("--unsynced-blocks", type=int, default=2,
                   help="blocks timed after the others without the per-forward synchronisation (default 2)")
    m.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 512; tiny 24)")
    m.add_argument("--attention", default="rsd", choices=("rsd", "sdpa", "eager"),
                   help="target verification attention (default rsd: rsd_kernels.tree_attention)")
    m.add_argument("--backend", default="auto", help="rsd_kernels backend (auto, cuda, triton, torch)")
    m.add_argument("--dtype", default="bfloat16")
    m.add_argument("--device", default=None)
    m.add_argument("--time-budget-s", type=float, default=200.0,
                   help="no new configuration starts after this many seconds (results so far are kept)")
    m.add_argument("--evals", nargs="*", default=list(DEFAULT_EVALS), help="rsd eval results with block efficiencies")
    m.add_argument("--plot", action="store_true", help="also draw DIR/projected.png/.pdf")
    p = sub.add_parser("project", help="projected token-rate table from an e2e.json")
    p.add_argument("e2e")
    p.add_argument("--evals", nargs="*", default=list(DEFAULT_EVALS))
    p.add_argument("--out", required=True)
    p.add_argument("--plot", default=None, metavar="PREFIX")
    args = ap.parse_args(argv)
    if args.cmd == "project":
        with open(args.e2e) as f:
            res = json.load(f)
        _write_projection(res, args.evals, args.out, args.plot)
        return 0
    args.log = None
    res = measure(args)
    sizes = ", ".join(f"{k}: {v['params']['total'] / 1e6:.1f}M params" for k, v in res["models"].items())
    print(f"e2e: {res['environment']['device']} | {sizes}")
    print(format_blocks(res))
    print(f"block times: {os.path.join(args.out, 'e2e.json')}")
    _write_projection(res, args.evals, os.path.join(args.out, "projected.json"),
                      os.path.join(args.out, "projected") if args.plot else None)
    failed = [r for r in res["results"] if "error" in r]
    return 1 if failed or not res["results"] or res.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
