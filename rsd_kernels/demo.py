"""A small demo of the reference verifier on table "models" (no neural network needed).

For each method at one budget: draft and verify many independent blocks from a random target /
draft pair over a small vocabulary, print the block efficiency (tokens per target call) and the
chi-square p-value of the first two emitted tokens against the target's own law.

    python -m rsd_kernels.demo [--budget 10] [--vocab 16] [--rows 5000] [--backend torch]
"""
from __future__ import annotations

import argparse
import time

import torch

from .methods import METHODS, default_config
from .testing import TableModel, chi_square_pvalue, expected_pairs, first_two_tokens


def block_efficiency(config, target, draft, rows, seed, backend):
    from .testing import _block

    roots = torch.zeros(rows, dtype=torch.int64)
    out = _block(config, roots, target, draft, 1.0, None, None, seed, 0, backend, backend)
    return float((out >= 0).sum(1).double().mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--vocab", type=int, default=16)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--noise", type=float, default=0.8, help="std of draft = target + noise (table logits)")
    ap.add_argument("--backend", default="torch")
    args = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    target = TableModel.random(args.vocab, 2.0, g)
    draft = TableModel.random(args.vocab, 2.0, g, base=target, noise=args.noise)
    print(f"table models: vocab {args.vocab}, draft = target + N(0, {args.noise}^2), {args.rows} rows, "
          f"budget {args.budget}, backend {args.backend}")
    print(f"{'method':8s} {'config':16s} {'tokens/call':>11s} {'exactness p':>12s} {'seconds':>8s}")
    for m in METHODS:
        cfg = default_config(m, args.budget)
        t0 = time.perf_counter()
        tau = block_efficiency(cfg, target, draft, args.rows, 1, args.backend)
        pairs = first_two_tokens(cfg, target, draft, root=0, n=args.rows, seed=2, backend=args.backend)
        pv = chi_square_pvalue(pairs, expected_pairs(target, 0))
        print(f"{m:8s} {str(cfg):16s} {tau:11.3f} {pv:12.3g} {time.perf_counter() - t0:8.2f}")
    print("exactness p: chi-square p-value of the first two emitted tokens vs the target (large = consistent)")


if __name__ == "__main__":
    main()
