"""Offline evaluation of the EAGLE-style draft beside the independent draft (held-out prompts, T = 1).

    python -m rsd.train.evaluate_eagle --weights RUN/eagle.safetensors [--threads 1] \\
        [--samples-cache heldout_samples.pt] [--json OUT.json]
    python -m rsd.train.evaluate_eagle --init-from RUN     # the untrained draft ("before")

Extends :mod:`rsd.train.evaluate` (same held-out target samples, same definitions):

* **acceptance at depth d** (``1 - TV(p, q)``, full vocabulary, temperature 1) along the
  target's own samples: depth 1 is the first drafted token, whose inputs all carry the
  target's features; at depth d > 1 the draft reads its own predicted features for the
  d - 1 tokens after the root (what a tree level below the first sees in the loop).
  Computed with :func:`rsd.engine.drafts.eagle.unrolled_forward`, which reproduces the KV-cache
  tree computation exactly (tested);
* **SD block efficiency at chain length 4** from these: for every root r,
  ``1 + sum_{k=1..4} prod_{j=1..k} a_j(r + j - 1)`` where ``a_j(t)`` is the depth-j
  acceptance at position t (``block_eff_L4``), and the per-depth-mean version
  ``1 + a1 + a1 a2 + a1 a2 a3 + a1 a2 a3 a4`` (``block_eff_L4_means``);
* **cost ratio** of one draft decode step (batch 1, KV cache over ``--context`` tokens,
  one token with its feature) to one target step, measured interleaved.

The independent draft (``--baseline``, default: the shipped one) has the same q at every
depth; its numbers come from :func:`rsd.train.evaluate.acceptance_along_samples`.
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from ..engine.drafts.eagle import EagleDraft, LayerTap, unrolled_forward
from .evaluate import acceptance_along_samples, block_efficiency, heldout_samples, pad_records, report, step_times
from .prompts import HELDOUT_PROMPTS


@torch.no_grad()
def eagle_acceptance(target, draft: EagleDraft, recs: list[dict], depth: int = 4, batch_size: int = 4) -> dict:
    """Per-response tensors ``acc[d]`` (depth d+1) of ``1 - TV`` and top-1 agreement, aligned by position."""
    acc = [[] for _ in range(depth)]
    top1 = [[] for _ in range(depth)]
    for s in range(0, len(recs), batch_size):
        chunk = recs[s:s + batch_size]
        ids, mask = pad_records(chunk)
        with LayerTap(target, draft.feature_layers) as tap:
            out = target(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            feat = tap.features(out.hidden_states[-1])  # [extra layers' outputs,] post-norm last hidden state
        p = torch.softmax(out.logits.float(), -1)
        prev = torch.cat([torch.zeros_like(feat[:, :1]), feat[:, :-1]], 1)
        streams = unrolled_forward(draft, ids, prev.to(draft.dtype), mask, depth, restricted=False)
        for d, (logits, _) in enumerate(streams):
            q = torch.softmax(logits.float(), -1)
            for b, r in enumerate(chunk):
                sl = slice(r["start"] - 1, len(r["ids"]) - 1)  # position t predicts response token t + 1
                pb, qb = p[b, sl], q[b, sl]
                acc[d].append(1 - 0.5 * (pb - qb).abs().sum(-1))
                top1[d].append((pb.argmax(-1) == qb.argmax(-1)).float())
    return {"acceptance": acc, "top1": top1}


def depth_block_efficiency(acc: list[list[torch.Tensor]], gamma: int = 4) -> float:
    """Mean over roots r of ``1 + sum_k prod_{j<=k} a_j(r + j - 1)`` (needs ``len(acc) >= gamma``)."""
    vals = []
    for i in range(len(acc[0])):
        n = len(acc[0][i])
        for r in range(n - gamma + 1):
            e, prod = 1.0, 1.0
            for j in range(gamma):
                prod *= float(acc[j][i][r + j])
                e += prod
            vals.append(e)
    return sum(vals) / max(1, len(vals))


class _FeatureStep(nn.Module):
    """Calls an :class:`EagleDraft` like a causal LM (zero features) so that ``step_times`` can time it."""

    def __init__(self, draft):
        super().__init__()
        self.draft = draft

    def forward(self, input_ids, **kw):
        f = torch.zeros((*input_ids.shape, self.draft.feature_width), dtype=self.draft.dtype)
        return self.draft(input_ids, f, **kw)


def evaluate_eagle(target, tok, draft, baseline=None, *, recs=None, depth=4, threads=1, context=128, steps=40,
                   time_steps=True) -> dict:
    torch.set_num_threads(threads)
    if recs is None:
        recs = heldout_samples(target, tok, 1, 128, 1234)
    res = eagle_acceptance(target, draft, recs, depth)
    out = {"heldout_prompts": len(HELDOUT_PROMPTS), "responses": len(recs),
           "positions": sum(len(a) for a in res["acceptance"][0]), "threads": threads, "models": {}}
    means = [float(torch.cat(a).mean()) for a in res["acceptance"]]
    m = {"acceptance_by_depth": [round(a, 4) for a in means],
         "top1_by_depth": [round(float(torch.cat(t).mean()), 4) for t in res["top1"]]}
    if depth >= 4:
        m["block_eff_L4"] = round(depth_block_efficiency(res["acceptance"], 4), 3)
        e, prod = 1.0, 1.0
        for a in means[:4]:
            prod *= a
            e += prod
        m["block_eff_L4_means"] = round(e, 3)
    out["models"]["eagle"] = m
    if baseline is not None:
        b = acceptance_along_samples(target, {"independent": baseline}, recs)
        alpha = float(torch.cat(b["acceptance"]["independent"]).mean())
        out["models"]["independent"] = {
            "acceptance_by_depth": [round(alpha, 4)] * depth,
            "top1_by_depth": [round(float(torch.cat(b["top1"]["independent"]).mean()), 4)] * depth,
            "block_eff_L4": round(block_efficiency(b["acceptance"]["independent"], 4), 3),
            "block_eff_L4_means": round((1 - alpha ** 5) / (1 - alpha), 3)}
    if time_steps:
        models = {"target": target, "eagle": _FeatureStep(draft)}
        if baseline is not None:
            models["independent"] = baseline
        times = step_times(models, context, steps)
        out["target_step_ms"] = round(1000 * times["target"], 2)
        for n in models:
            if n != "target":
                out["models"][n]["step_ms"] = round(1000 * times[n], 2)
                out["models"][n]["cost_ratio"] = round(times[n] / times["target"], 4)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m rsd.train.evaluate_eagle", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None, help="eagle.safetensors to evaluate")
    ap.add_argument("--init-from", default=None, help="evaluate the untrained draft of this run folder (kept_ids.pt)")
    ap.add_argument("--layers", type=int, default=1, help="layers of the untrained draft (--init-from)")
    ap.add_argument("--init", choices=("copy", "mean"), default="copy", help="init of the untrained draft")
    ap.add_argument("--baseline", default="shipped", help="independent draft safetensors, 'shipped', or 'none'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--draft-dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--samples-cache", default=None, help="held-out samples written by rsd.train.evaluate")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from ..engine.embedded import load_embedded_target
    from ..engine.drafts import load_embedded_draft
    from ..engine.drafts.eagle import init_eagle_from_target, load_eagle

    torch.set_num_threads(args.threads)
    target, tok = load_embedded_target()
    dtype = getattr(torch, args.draft_dtype)
    if args.init_from:
        draft = init_eagle_from_target(target, torch.load(os.path.join(args.init_from, "kept_ids.pt")),
                                       args.layers, init=args.init).to(dtype).eval()
    else:
        draft = load_eagle(args.weights, target.get_input_embeddings().weight, dtype)
    baseline = None
    if args.baseline != "none":
        baseline = load_embedded_draft(target, dtype=dtype, path=None if args.baseline == "shipped" else args.baseline)
    recs = None
    if args.samples_cache and os.path.exists(args.samples_cache):
        recs = torch.load(args.samples_cache)["records"]
    res = evaluate_eagle(target, tok, draft, baseline, recs=recs, depth=args.depth, threads=args.threads,
                         context=args.context, steps=args.steps, time_steps=not args.no_timing)
    return report(res, args.json)


if __name__ == "__main__":
    main()
