"""Batched vs sequential decoding throughput (a benchmark script, not a timed test).

For each method (default ``ar`` and ``rsd-s``) and batch size (default 1, 4, 8), decodes the
first B of 8 mixed-length chat prompts twice in the same process: **sequentially** (one
``rsd.generate`` call per prompt, the single-prompt loop) and **batched** (one ``rsd.generate``
call on the list of prompts), and prints the tokens per second of decoding (prefill excluded;
with prefill in brackets) and the ratio batched / sequential. Greedy, no EOS (every row decodes
``--new`` tokens), so both runs decode the same tokens; the script checks that they are equal.
The two runs of a cell alternate ``--repeats`` times; the best time of each is kept (shared
machines are noisy).

    python bench/batched_loop.py                  # embedded pair (SmolLM2-135M + shipped draft), CPU
    python bench/batched_loop.py --device cuda    # same on a GPU
    python bench/batched_loop.py --tiny           # tiny offline random pair (CI: tests/test_bench_batched.py)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain in two sentences why the sky is blue, and mention Rayleigh scattering by name.",
    "List three fruits.",
    "Tell me a number between 1 and 10.",
    "Summarise the plot of a detective story in which the butler did not do it, but the gardener's "
    "twin brother did, in a few sentences.",
    "How do I boil an egg?",
    "Give me some advice for a job interview at a software company.",
]


def load_pair(tiny, device, dtype):
    import torch

    if tiny:
        sys.path.insert(0, os.path.join(REPO, "tests"))
        from eval_tiny_pair import VOCAB, tiny_llama

        g = torch.Generator().manual_seed(0)
        lengths = [5, 17, 9, 30, 3, 24, 12, 40]
        prompts = [torch.randint(0, VOCAB - 1, (n,), generator=g).tolist() for n in lengths]
        return tiny_llama(2, 0).to(device), tiny_llama(1, 1).to(device), prompts, "tiny random pair"
    from rsd.engine.models import prompt_ids
    from rsd.engine.models import load_draft, load_target

    tgt = load_target("embedded", dtype=dtype, device=device)
    drf = load_draft("embedded", tgt, dtype=dtype, device=device, log=lambda m: None)
    prompts = [prompt_ids(tgt.tokenizer, p, chat=True) for p in PROMPTS]
    return tgt.model, drf.model, prompts, f"{tgt.label} + {drf.label}"


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny offline random pair (tests/eval_tiny_pair.py)")
    ap.add_argument("--methods", default="ar,rsd-s")
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--new", type=int, default=None, help="new tokens per row (default 32; --tiny 8)")
    ap.add_argument("--repeats", type=int, default=None, help="runs of each cell, best kept (default 2; --tiny 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--json", metavar="PATH", help="write the results here")
    args = ap.parse_args(argv)
    import torch

    from rsd.engine.adapter import ModelAdapter
    from rsd.engine.generate import generate

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    new = args.new or (8 if args.tiny else 32)
    repeats = args.repeats or (1 if args.tiny else 2)
    batches = [int(b) for b in args.batches.split(",")]
    methods = args.methods.split(",")
    target, draft, prompts, label = load_pair(args.tiny, args.device, args.dtype)
    if max(batches) > len(prompts):
        raise SystemExit(f"at most {len(prompts)} prompts")
    tgt = ModelAdapter(target)
    drf = ModelAdapter(draft)
    lens = [len(p) for p in prompts]
    print(f"pair: {label}; device {args.device}, {args.threads} thread(s); prompts of {lens} tokens; "
          f"{new} new tokens per row, greedy, no EOS; best of {repeats}")
    # warm-up (untimed): both paths, both models
    for m in methods:
        d = None if m == "ar" else drf
        generate(tgt, d, prompts[0], m, budget=None if m == "ar" else args.budget, max_new_tokens=2, seed=0)
        generate(tgt, d, prompts[:2], m, budget=None if m == "ar" else args.budget, max_new_tokens=2, seed=0)
    results = []
    print(f"{'method':8} {'batch':>5} {'sequential tok/s':>18} {'batched tok/s':>15} {'ratio':>7}   "
          f"(with prefill: seq / batched)  same tokens")
    for m in methods:
        d = None if m == "ar" else drf
        bud = None if m == "ar" else args.budget
        for B in batches:
            ps = [list(p) for p in prompts[:B]]
            best_seq = best_bat = None
            for _ in range(repeats):
                sync(args.device)
                rs = [generate(tgt, d, p, m, budget=bud, max_new_tokens=new, seed=0) for p in ps]
                sync(args.device)
                seq = (sum(r.decode_s for r in rs), sum(r.wall_s for r in rs), [r.tokens for r in rs])
                rb = generate(tgt, d, ps, m, budget=bud, max_new_tokens=new, seed=0)
                sync(args.device)
                bat = (rb.decode_s, rb.wall_s, rb.tokens)
                best_seq = seq if best_seq is None or seq[0] < best_seq[0] else best_seq
                best_bat = bat if best_bat is None or bat[0] < best_bat[0] else best_bat
            ntok = sum(len(t) for t in best_seq[2])
            same = best_seq[2] == best_bat[2]
            row = {"method": m, "batch": B, "tokens": ntok,
                   "sequential_tok_s": ntok / best_seq[0], "batched_tok_s": ntok / best_bat[0],
                   "sequential_wall_tok_s": ntok / best_seq[1], "batched_wall_tok_s": ntok / best_bat[1],
                   "same_tokens": same}
            row["ratio"] = row["batched_tok_s"] / row["sequential_tok_s"]
            row["ratio_wall"] = row["batched_wall_tok_s"] / row["sequential_wall_tok_s"]
            results.append(row)
            print(f"{m:8} {B:5d} {row['sequential_tok_s']:18.1f} {row['batched_tok_s']:15.1f} {row['ratio']:6.2f}x   "
                  f"({row['sequential_wall_tok_s']:.1f} / {row['batched_wall_tok_s']:.1f})  {same}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pair": label, "device": args.device, "threads": args.threads, "new_tokens": new,
                       "prompt_lengths": lens, "budget": args.budget, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
