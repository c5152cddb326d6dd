"""Measure a draft against the embedded target on held-out prompts (CPU, temperature 1).

    python -m rsd.train.evaluate [--weights PATH] [--threads 2] [--json OUT.json]

For the shipped draft and for the layer-truncated stand-in (the target's first 2 layers,
its final norm and its full tied head) it reports:

* **acceptance rate** alpha: the mean over positions of target samples of
  ``1 - TV(p, q)``, where ``p``/``q`` are the target's/draft's full next-token
  distributions at temperature 1. Samples: ``--samples-per-prompt`` responses of at most
  ``--max-new-tokens`` tokens drawn from the target for each prompt of
  :data:`rsd.train.prompts.HELDOUT_PROMPTS` (disjoint from the training prompts);
  ``p`` and ``q`` are then computed teacher-forced on those sequences.
* **SD block efficiency at chain length 4** (tokens produced per target call when the
  draft proposes 4 tokens per block), computed analytically, two ways:
  ``block_eff_L4`` = mean over response positions t (with t+3 inside the response) of
  ``sum_{k=0..4} prod_{j<k} a_{t+j}``, using the per-position acceptance ``a`` along the
  target's own samples; ``block_eff_L4_iid`` = ``(1 - alpha^5) / (1 - alpha)``, the
  i.i.d. formula of Leviathan et al. Both approximate what a real SD run would see
  (there, the accepted prefix is not exactly a target sample); neither is a simulation.
* **cost ratio**: the draft's time per decode step / the target's, both at batch 1 with
  a KV cache over a context of ``--context`` tokens, using ``--threads`` threads,
  measured interleaved (median of ``--steps`` steps each). The draft's step includes
  expanding its restricted logits to the full vocabulary.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from .prompts import HELDOUT_PROMPTS, chat_ids
from .draft import EOS_ID, sample_batch


def truncated_standin(target, num_layers: int = 2):
    """The target's first ``num_layers`` layers + final norm + tied head, as a ``LlamaForCausalLM``."""
    from transformers import LlamaForCausalLM

    from ..engine.drafts.restricted import draft_config_from_target

    cfg = draft_config_from_target(target.config, num_layers)
    cfg.tie_word_embeddings = True
    m = LlamaForCausalLM(cfg)
    sd = {k: v for k, v in target.state_dict().items()
          if not k.startswith("model.layers.") or int(k.split(".")[2]) < num_layers}
    m.load_state_dict(sd, strict=False)
    m.tie_weights()
    return m.eval()


@torch.no_grad()
def heldout_samples(target, tok, samples_per_prompt: int, max_new_tokens: int, seed: int, batch_size: int = 16):
    prompts = [chat_ids(tok, p) for _, p in HELDOUT_PROMPTS for _ in range(samples_per_prompt)]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    recs = []
    for s in range(0, len(order), batch_size):
        g = torch.Generator().manual_seed(seed + s)
        recs += sample_batch(target, [prompts[i] for i in order[s:s + batch_size]], max_new_tokens, 1, g)
    return recs


@torch.no_grad()
def pad_records(chunk: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """The records' ``ids`` right-padded with EOS into one batch ``[n, S]`` and its attention mask."""
    S = max(len(r["ids"]) for r in chunk)
    ids = torch.full((len(chunk), S), EOS_ID, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(chunk):
        ids[b, :len(r["ids"])] = r["ids"].long()
        mask[b, :len(r["ids"])] = 1
    return ids, mask


def acceptance_along_samples(target, drafts: dict, recs: list[dict], batch_size: int = 8) -> dict:
    """Per-response arrays of ``1 - TV(p, q)``, top-1 agreement and (restricted heads) target mass in the head."""
    acc = {name: [] for name in drafts}
    top1 = {name: [] for name in drafts}
    in_head = {name: [] for name in drafts if hasattr(drafts[name], "kept_ids")}
    for s in range(0, len(recs), batch_size):
        chunk = recs[s:s + batch_size]
        ids, mask = pad_records(chunk)
        p = torch.softmax(target(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for name, d in drafts.items():
            q = torch.softmax(d(input_ids=ids, attention_mask=mask).logits.float(), -1)
            for b, r in enumerate(chunk):
                sl = slice(r["start"] - 1, len(r["ids"]) - 1)  # predicts every response token
                pb, qb = p[b, sl], q[b, sl]
                acc[name].append(1 - 0.5 * (pb - qb).abs().sum(-1))
                top1[name].append((pb.argmax(-1) == qb.argmax(-1)).float())
                if name in in_head:  # target mass the restricted head can cover: an upper bound on 1 - TV
                    in_head[name].append(pb[:, d.kept_ids].sum(-1))
    return {"acceptance": acc, "top1": top1, "in_head": in_head}


def block_efficiency(acc_per_response: list[torch.Tensor], gamma: int = 4) -> float:
    vals = []
    for a in acc_per_response:
        for t in range(len(a) - gamma + 1):
            e, prod = 1.0, 1.0
            for j in range(gamma):
                prod *= float(a[t + j])
                e += prod
            vals.append(e)
    return sum(vals) / max(1, len(vals))


@torch.no_grad()
def step_times(models: dict, context: int, steps: int, seed: int = 0) -> dict:
    """Median seconds per single-token decode step with a KV cache over ``context`` tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, 8000, (1, context), generator=g)
    caches = {n: m(input_ids=ids, use_cache=True).past_key_values for n, m in models.items()}
    nxt, pos = torch.tensor([[EOS_ID]]), torch.tensor([[context]])
    times = {n: [] for n in models}
    for i in range(steps + 3):
        for n, m in models.items():
            t = time.perf_counter()
            m(input_ids=nxt, position_ids=pos, past_key_values=caches[n], use_cache=True)
            caches[n].crop(-1)  # drop the token again: every step sees the same context
            if i >= 3:
                times[n].append(time.perf_counter() - t)
    return {n: statistics.median(v) for n, v in times.items()}


def evaluate(target, tok, draft, *, samples_per_prompt=2, max_new_tokens=128, seed=1234, threads=2, context=128,
             steps=60, standin_layers=2, samples_cache=None) -> dict:
    torch.set_num_threads(threads)
    standin = truncated_standin(target, standin_layers)
    drafts = {"trained_draft": draft, f"truncated_{standin_layers}_layers": standin}
    key = (samples_per_prompt, max_new_tokens, seed)
    if samples_cache and os.path.exists(samples_cache) and torch.load(samples_cache)["key"] == key:
        recs = torch.load(samples_cache)["records"]
    else:
        recs = heldout_samples(target, tok, samples_per_prompt, max_new_tokens, seed)
        if samples_cache:
            torch.save({"key": key, "records": recs}, samples_cache)
    res = acceptance_along_samples(target, drafts, recs)
    times = step_times({"target": target, **drafts}, context, steps)
    out = {"heldout_prompts": len(HELDOUT_PROMPTS), "responses": len(recs), "draft_dtype": str(draft.dtype),
           "positions": sum(len(a) for a in res["acceptance"]["trained_draft"]), "threads": threads,
           "target_step_ms": round(1000 * times["target"], 2), "models": {}}
    for name in drafts:
        a = torch.cat(res["acceptance"][name])
        alpha = float(a.mean())
        out["models"][name] = {
            "acceptance": round(alpha, 4),
            "top1_agreement": round(float(torch.cat(res["top1"][name]).mean()), 4),
            "block_eff_L4": round(block_efficiency(res["acceptance"][name], 4), 3),
            "block_eff_L4_iid": round((1 - alpha ** 5) / (1 - alpha), 3),
            "target_mass_in_head": (round(float(torch.cat(res["in_head"][name]).mean()), 4)
                                    if name in res["in_head"] else 1.0),
            "step_ms": round(1000 * times[name], 2),
            "cost_ratio": round(times[name] / times["target"], 4),
        }
    return out


def report(res: dict, path: str | None) -> dict:
    """Print ``res`` as indented JSON and, with ``path`` (``--json``), write it there too."""
    text = json.dumps(res, indent=2)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m rsd.train.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None, help="draft safetensors (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples-per-prompt", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--draft-dtype", choices=("float32", "bfloat16"), default="float32",
                    help="dtype of the trained draft (the target and the stand-in stay float32)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--samples-cache", default=None,
                    help="file to keep the held-out target samples in (reused when the settings match)")
    ap.add_argument("--samples-only", action="store_true", help="only draw (and cache) the held-out samples")
    args = ap.parse_args(argv)
    from ..engine.embedded import load_embedded_target
    from ..engine.drafts import load_embedded_draft

    target, tok = load_embedded_target()
    if args.samples_only:
        torch.set_num_threads(args.threads)
        recs = heldout_samples(target, tok, args.samples_per_prompt, args.max_new_tokens, args.seed)
        torch.save({"key": (args.samples_per_prompt, args.max_new_tokens, args.seed), "records": recs},
                   args.samples_cache)
        return {"responses": len(recs)}
    draft = load_embedded_draft(target, path=args.weights, dtype=getattr(torch, args.draft_dtype))
    res = evaluate(target, tok, draft, samples_per_prompt=args.samples_per_prompt,
                   max_new_tokens=args.max_new_tokens, seed=args.seed, threads=args.threads,
                   context=args.context, steps=args.steps, samples_cache=args.samples_cache)
    return report(res, args.json)


if __name__ == "__main__":
    main()
