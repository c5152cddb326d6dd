"""Traversal against token-level verification on the SAME trees: exact expected accepted length.

    python bench/verifier_gain.py --out docs/figures/verifier_gain.json [--items 10] [--blocks 3]
        [--budgets 6,10,14,21,30] [--temperatures 1.0,0.6] [--datasets wmt,xsum,dolly] [--draft embedded]

For the embedded pair (target ``embedded``, draft ``--draft``, default the independent ``embedded``
draft that ``rsd eval`` uses), every prompt of the built-in data sets (the first ``--items``), and
``--blocks`` contexts per prompt (the prompt, then the prompt followed by 16, 32, ... tokens the
target itself samples at the temperature), it grows each method's default tree
(:func:`rsd_kernels.default_config`) at every budget with the loop's own code
(:meth:`rsd.engine.loop.Decoder.propose`: the draft's tree and the target's logits at its nodes,
nothing committed), and computes on that one tree, exactly and without sampling
(:func:`rsd_kernels.expected_accepted_length`: the expectation over the verifier's randomness):

* SD, RSD-C, RSD-S: ``rrs`` and ``traversal``;
* SpecTr: ``kseq`` on its i.i.d. chains (what ``rsd generate --verifier rrs`` runs), and on the
  same chains merged into a prefix tree (:func:`rsd_kernels.methods.merge_spectr_tree`) ``rrs``
  and ``traversal`` (what ``--verifier traversal`` runs).

Per (temperature, data set, method, budget) it reports the mean expected accepted length per block
under each verifier, the relative gain ``mean(traversal) / mean(token-level) - 1`` (token level =
``rrs``; SpecTr: ``kseq``) and 95% percentile-bootstrap intervals over items
(:func:`rsd.eval.metrics.bootstrap_ci`: an item's blocks stay together, the pairing is kept), and
the smallest per-tree difference (traversal - token level; negative would mean a tree where
traversal accepts less). JSON out; a table on stdout. Each block uses the Philox seed of its item.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "python")]

from rsd.engine.adapter import ModelAdapter  # noqa: E402
from rsd.engine.generate import generate  # noqa: E402
from rsd.engine.loop import Decoder  # noqa: E402
from rsd.engine.models import load_draft, load_target  # noqa: E402
from rsd.eval.datasets import load_eval_set  # noqa: E402
from rsd.eval.metrics import bootstrap_ci  # noqa: E402
from rsd.eval.runner import chat_prompt_ids  # noqa: E402
from rsd_kernels import default_config, expected_accepted_length  # noqa: E402
from rsd_kernels.methods import METHODS, merge_spectr_tree  # noqa: E402

STRIDE = 16  # tokens between an item's contexts


def _ints(text):
    return tuple(int(x) for x in text.split(",") if x.strip())


def _floats(text):
    return tuple(float(x) for x in text.split(",") if x.strip())


def tree_lengths(dec, method, temperature):
    """{verifier: E[accepted | tree]} on the tree ``dec`` proposes (SpecTr: also merged)."""
    drafted, logits = dec.propose()
    kw = dict(temperature=temperature)
    if method != "spectr":
        return {m: float(expected_accepted_length(logits, drafted.draft_logits, drafted.tree, mode=m, **kw)[0])
                for m in ("rrs", "traversal")}
    out = {"kseq": float(expected_accepted_length(logits, drafted.draft_logits, drafted.tree, mode="kseq", **kw)[0])}
    merged = merge_spectr_tree(drafted)
    src = merged.source.clamp(min=0)
    ml = logits.gather(1, src[..., None].expand(-1, -1, logits.shape[-1]))
    for m in ("rrs", "traversal"):
        out[m] = float(expected_accepted_length(ml, merged.draft_logits, merged.tree, mode=m, **kw)[0])
    out["merged_nodes"] = int(merged.tree.num_nodes[0])
    return out


def summarize(cells):
    """Per cell: means, the gain and their 95% intervals over items, the smallest tree difference."""
    out = []
    for key, items in cells.items():
        temperature, dataset, method, budget = key
        base = "kseq" if method == "spectr" else "rrs"
        per_item = {v: [sum(b[v] for b in blocks) for blocks in items] for v in items[0][0] if v != "merged_nodes"}
        n_blocks = [len(blocks) for blocks in items]
        rec = {"temperature": temperature, "dataset": dataset, "method": method, "budget": budget,
               "config": str(default_config(method, budget)), "items": len(items), "blocks": sum(n_blocks),
               "baseline": base}
        for v, sums in per_item.items():
            rec[f"mean_{v}"] = sum(sums) / sum(n_blocks)
            rec[f"mean_{v}_ci"] = bootstrap_ci([sums, n_blocks], lambda s, n: s / n)
        rec["gain"] = rec["mean_traversal"] / rec[f"mean_{base}"] - 1
        rec["gain_ci"] = bootstrap_ci([per_item["traversal"], per_item[base]], lambda t, r: t / r - 1)
        diffs = [b["traversal"] - b[base] for blocks in items for b in blocks]
        rec["min_tree_difference"] = min(diffs)
        rec["trees_where_traversal_accepts_less"] = sum(d < -1e-9 for d in diffs)
        if method == "spectr":
            rec["gain_merged_rrs_over_kseq"] = rec["mean_rrs"] / rec["mean_kseq"] - 1
            rec["gain_traversal_over_merged_rrs"] = rec["mean_traversal"] / rec["mean_rrs"] - 1
            rec["mean_merged_nodes"] = sum(b["merged_nodes"] for blocks in items for b in blocks) / sum(n_blocks)
        out.append(rec)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="verifier_gain.json")
    ap.add_argument("--draft", default="embedded")
    ap.add_argument("--datasets", default="wmt,xsum,dolly")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=3, help="contexts per item (0, 16, 32, ... sampled tokens)")
    ap.add_argument("--budgets", type=_ints, default=(6, 10, 14, 21, 30))
    ap.add_argument("--temperatures", type=_floats, default=(1.0, 0.6))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    tgt = load_target("embedded")
    drf = load_draft(args.draft, tgt, log=lambda m: print(m, file=sys.stderr))
    tad, dad = ModelAdapter(tgt.model), ModelAdapter(drf.model)
    methods = [m for m in args.methods.split(",") if m]
    cells = {}
    for temperature in args.temperatures:
        for dataset in args.datasets.split(","):
            evalset = load_eval_set(dataset, limit=args.items)
            for i, item in enumerate(evalset.items):
                prompt = chat_prompt_ids(tgt.tokenizer, item.prompt)
                seed = args.seed + i
                cont = generate(tad, None, prompt, "ar", temperature=temperature, seed=seed,
                                max_new_tokens=max(1, STRIDE * (args.blocks - 1))).tokens
                for k in range(args.blocks):
                    ctx = list(prompt) + cont[: STRIDE * k]
                    base = Decoder(tad, dad, "sd", budget=1, temperature=temperature, seed=seed)
                    base.prefill(ctx)
                    for method in methods:
                        for budget in args.budgets:
                            dec = Decoder(tad, dad, method, budget=budget, temperature=temperature, seed=seed,
                                          verifier="rrs")
                            dec.state, dec.block = base.state, k
                            lengths = tree_lengths(dec, method, temperature)
                            key = (temperature, dataset, method, budget)
                            blocks = cells.setdefault(key, [])
                            if len(blocks) <= i:
                                blocks.append([])
                            blocks[i].append(lengths)
                print(f"T={temperature} {dataset} item {i + 1}/{len(evalset)} done ({time.time() - t_start:.0f} s)",
                      file=sys.stderr, flush=True)
    rows = summarize(cells)
    out = {"settings": {**vars(args), "target": tgt.label, "draft": drf.label, "stride": STRIDE,
                        "what": "exact E[accepted draft tokens | tree] per block, paired on identical trees"},
           "environment": {"python": platform.python_version(), "torch": torch.__version__,
                           "machine": platform.machine(), "threads": args.threads,
                           "note": "shared 2-core CPU; no timing is reported"},
           "elapsed_s": time.time() - t_start, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(format_table(rows))
    print(f"results: {args.out}")
    return 0


def format_table(rows) -> str:
    lines = [f"{'T':>4} {'set':6} {'method':7} {'budget':>6} {'token-level':>11} {'traversal':>9} {'gain':>7} "
             f"{'gain 95% CI':>17} {'min diff':>9}"]
    for r in rows:
        lo, hi = r["gain_ci"]
        lines.append(f"{r['temperature']:4.1f} {r['dataset']:6} {r['method']:7} {r['budget']:6d} "
                     f"{r['mean_' + r['baseline']]:11.3f} {r['mean_traversal']:9.3f} {100 * r['gain']:6.2f}% "
                     f"[{100 * lo:6.2f}, {100 * hi:6.2f}]% {r['min_tree_difference']:9.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
