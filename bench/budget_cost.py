"""What a large budget costs: block efficiency and CPU time per token of one method at several budgets.

``python bench/budget_cost.py [--method rsd-s] [--budgets 10,30,64,128,255] [--tokens 32]`` decodes one
prompt on the embedded pair (EAGLE draft, greedy) with each budget's default tree, after ``ar``, and
prints block efficiency and the thread CPU time per generated token (prefill included; one thread).
It backs the budget limits of ``rsd.engine.configs`` (README, "Budget limits"): a block commits at
most depth + 1 tokens, so past some budget only the verification forward grows.
"""
from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="rsd-s")
    ap.add_argument("--budgets", default="10,30,64,128,255")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prompt", default="Explain why the sky is blue.")
    args = ap.parse_args(argv)
    import torch

    from rsd.cli.console import library_output
    from rsd.engine.adapter import ModelAdapter
    from rsd.engine.generate import generate
    from rsd.engine.models import eos_ids, load_draft, load_target, prompt_ids

    torch.set_num_threads(1)
    with library_output(False) as log:
        tgt = load_target("embedded", log=log)
        drf = load_draft("embedded-eagle", tgt, log=log)
    ids = prompt_ids(tgt.tokenizer, args.prompt, True)
    target, draft = ModelAdapter(tgt.model), ModelAdapter(drf.model)
    kw = dict(max_new_tokens=args.tokens, seed=0, eos_token_id=eos_ids(tgt.tokenizer, tgt.model))
    generate(target, draft, ids, args.method, budget=10, **dict(kw, max_new_tokens=4))  # warm-up
    print("config            block efficiency   CPU ms / token")
    for budget in [None] + [int(b) for b in args.budgets.split(",")]:
        t0 = time.thread_time()
        r = generate(target, None if budget is None else draft, ids, "ar" if budget is None else args.method,
                     budget=budget, **kw)
        ms = 1000 * (time.thread_time() - t0) / len(r.tokens)
        print(f"{str(r.config or 'ar'):18} {r.block_efficiency:16.2f} {ms:16.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
