"""``rsd eval`` and ``rsd plot``.

:func:`add_parser` registers both sub-commands on an ``argparse`` sub-parsers object and
:func:`run` executes the parsed arguments (the convention of ``rsd.cli``);
``python -m rsd.eval.cli eval ...`` works on its own too.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

COMMANDS = ("eval", "plot")


def _ints(text):
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text):
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_eval_parser(subparsers):
    from rsd_kernels.methods import DEFAULT_MAX_DEPTH, METHODS

    from ..engine.configs import DEFAULT_VERIFIER
    from .runner import CONFIG_MODES, DATASETS

    p = subparsers.add_parser(
        "eval", help="run the evaluation grid (methods x budgets x configurations x data sets)",
        description="Run SD, SpecTr, RSD-C and RSD-S at every budget and selected configuration on each "
                    "data set, with target-only autoregressive decoding and Hugging Face assisted generation "
                    "as baselines, and write one JSON results file (resumable).")
    p.add_argument("--target", default="embedded", help="target model: 'embedded', a model id or a folder")
    p.add_argument("--draft", default="embedded", help="draft model: 'embedded', 'embedded-eagle', 'eagle:PATH' (EAGLE "
                   "feature-level drafts), 'truncated:N', a model id or a folder")
    p.add_argument("--datasets", type=_names, default=DATASETS,
                   help="comma-separated data set specs: wmt, xsum, dolly (built-in), NAME:PATH (local JSON/JSONL), "
                        "NAME:hub (datasets.load_dataset)")
    p.add_argument("--methods", type=_names, default=METHODS, help=f"comma-separated, from {','.join(METHODS)}")
    p.add_argument("--verifier", type=_names, default=None, metavar="NAMES",
                   help=f"tree verifier(s), comma-separated: rrs, traversal (default {DEFAULT_VERIFIER}); with both, "
                        "each configuration runs under each and the figure gets one line per method and verifier")
    p.add_argument("--budgets", type=_ints, default=None, help="comma-separated budgets (default 6,10,14,21,30)")
    p.add_argument("--items", type=int, default=None, help="prompts per data set (default 8; 0: all)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 64")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0, help="item i is decoded with seed + i by every method")
    p.add_argument("--configs", choices=CONFIG_MODES, default=None,
                   help="which configurations per (method, budget): all, capped (the default: RSD-C "
                        "non-increasing branching only), default (one)")
    p.add_argument("--max-configs", type=int, default=None, help="at most this many per (method, budget)")
    p.add_argument("--max-depth", type=int, default=DEFAULT_MAX_DEPTH, help="depth cap (not for SD)")
    p.add_argument("--attention", choices=("sdpa", "eager", "rsd"), default="sdpa")
    p.add_argument("--backend", default="auto", help="rsd_kernels backend: auto, torch, triton, cuda")
    p.add_argument("--no-peer", action="store_true", help="skip the Hugging Face assisted-generation baseline")
    p.add_argument("--no-auto", action="store_true", help="skip the method=auto row (trees chosen per block)")
    p.add_argument("--param-ratio", type=float, default=None,
                   help="draft/target parameter ratio for MBSU (default: counted from the models)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--quick", action="store_true",
                   help="small grid for CI: 2 items per set, budgets 6,10, the default configuration, 8 new "
                        "tokens (options given explicitly still win)")
    p.add_argument("--out", default="results/eval.json", help="results JSON (extended when it exists)")
    p.add_argument("--overwrite", action="store_true", help="start a new results file even if --out exists")
    p.add_argument("--plot", default=None, metavar="PREFIX", help="also draw the figure to PREFIX.png/.pdf")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(_rsd_eval_command="eval")
    return p


def add_plot_parser(subparsers):
    p = subparsers.add_parser("plot", help="draw the seed figure from rsd eval results",
                              description="Draw the seed figure (rows: model x data set; columns: block "
                                          "efficiency, MBSU, token rate, accuracy) as PNG and PDF.")
    p.add_argument("results", nargs="+", help="one or more results JSON files (their runs are merged)")
    p.add_argument("--out", default=None, help="output prefix (default: the first results file without .json)")
    p.add_argument("--title", default=None)
    p.set_defaults(_rsd_eval_command="plot")
    return p


def add_parser(subparsers):
    """Register ``eval`` and ``plot``."""
    return add_eval_parser(subparsers), add_plot_parser(subparsers)


def settings_from_args(args):
    """Explicit options win; then ``--quick``'s values; then the defaults of :class:`EvalSettings`."""
    from .runner import QUICK, EvalSettings

    kw = dict(target=args.target, draft=args.draft, datasets=args.datasets, methods=args.methods,
              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
              max_configs=args.max_configs, max_depth=args.max_depth,
              attention=args.attention, backend=args.backend, peer=not args.no_peer, auto=not args.no_auto, threads=args.threads,
              param_ratio=args.param_ratio, dtype=args.dtype)
    if args.verifier is not None:
        kw["verifiers"] = args.verifier
    quick = QUICK if args.quick else {}
    for key in ("items", "budgets", "max_new_tokens", "configs"):
        value = getattr(args, key)
        if value is not None:
            kw[key] = value
        elif key in quick:
            kw[key] = quick[key]
    if kw.get("items") == 0:
        kw["items"] = None
    return EvalSettings(**kw)


def run(args) -> int:
    cmd = getattr(args, "_rsd_eval_command", None)
    if cmd == "eval":
        return _run_eval(args)
    if cmd == "plot":
        return _run_plot(args)
    raise ValueError(f"rsd.eval.cli.run: unknown command {cmd!r}")


def _run_eval(args) -> int:
    from .runner import run_grid

    settings = settings_from_args(args)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    results = run_grid(settings, args.out, progress=not args.no_progress, overwrite=args.overwrite, log=log)
    print(format_summary(results))
    print(f"results: {args.out}")
    if args.plot:
        from .plot import plot_results

        for path in plot_results(results, args.plot):
            print(f"figure: {path}")
    return 0


def _run_plot(args) -> int:
    from .plot import load_results, plot_results

    merged = {"runs": [], "peer": [], "ar": [], "auto": [], "datasets_order": []}
    for path in args.results:
        r = load_results(path)
        for key in ("runs", "peer", "ar", "auto"):
            merged[key] += r.get(key, [])
        merged["datasets_order"] += [d for d in r.get("datasets_order", []) if d not in merged["datasets_order"]]
    out = args.out or os.path.splitext(args.results[0])[0]
    for path in plot_results(merged, out, title=args.title):
        print(path)
    return 0


def _fmt(v, nd=2):
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def format_summary(results: dict) -> str:
    """A table of the best configuration per (data set, method, budget), plus the baselines."""
    from .plot import best_points, verifiers_of

    lines = []
    models = results.get("models") or {}
    if models:
        lines.append(f"target: {models.get('target')}\ndraft:  {models.get('draft')}\n"
                     f"param ratio r = {models.get('param_ratio'):.4f} ({models.get('param_ratio_source')})")
    verifiers = verifiers_of(results) if results.get("runs") else []
    best = {v: best_points(results, v) for v in verifiers}
    for model, ds in dict.fromkeys(k for bv in best.values() for k in bv):
        ar = next((r for r in results.get("ar", []) if (r["model"], r["dataset"], r["method"]) == (model, ds, "ar")), None)
        rep = next((r for r in results.get("ar", []) if (r["model"], r["dataset"], r["method"]) == (model, ds, "ar_repeat")),
                   None)
        lines.append(f"\n{model} on {ds}: ar {ar['tokens']} tokens, {_fmt(ar['tokens_per_s'], 1)} tok/s, "
                     f"{ar['metric']} {_fmt(ar['score'], 3)}; ar_repeat accuracy {_fmt((rep or {}).get('accuracy'))}"
                     if ar else f"\n{model} on {ds}")
        lines.append(f"  {'method':7s} {'verifier':9s} {'budget':>6s} {'config':16s} {'tau':>6s} {'tau 95% CI':>13s} "
                     f"{'MBSU':>6s} {'rate':>6s} {'acc':>6s}")
        for method in ("sd", "spectr", "rsd-c", "rsd-s"):
            for v in verifiers:
                for b, run in sorted(best[v].get((model, ds), {}).get(method, {}).items()):
                    ci = run.get("block_efficiency_ci")
                    ci = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "n/a"
                    lines.append(f"  {method:7s} {v:9s} {b:6d} {run['config']:16s} {_fmt(run['block_efficiency']):>6s} "
                                 f"{ci:>13s} {_fmt(run['mbsu']):>6s} {_fmt(run['token_rate']):>6s} "
                                 f"{_fmt(run['accuracy']):>6s}")
        for a in results.get("auto", []):
            if (a["model"], a["dataset"]) == (model, ds):
                used = ", ".join(f"{c} x{n}" for c, n in list(a.get("configs_used", {}).items())[:3])
                lines.append(f"  {'auto':7s} {'':9s} {'':>6s} {'per block':16s} {_fmt(a['block_efficiency']):>6s} {'':>13s} "
                             f"{_fmt(a['mbsu']):>6s} {_fmt(a['token_rate']):>6s} {_fmt(a['accuracy']):>6s}  [{used}]")
        for p in results.get("peer", []):
            if (p["model"], p["dataset"]) == (model, ds):
                lines.append(f"  {'hf-assisted':11s} {p['budget']:2d} rate {_fmt(p.get('token_rate'))}"
                             + (f" (vs HF ar {_fmt(p.get('token_rate_vs_hf_ar'))}, acc {_fmt(p.get('accuracy'))})"
                                if p.get("available") else f"  n/a: {p.get('reason')}"))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rsd")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
