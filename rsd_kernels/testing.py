"""Statistical exactness harness: tiny table "models" and a chi-square on emitted tokens.

A :class:`TableModel` gives the next-token logits as a function of the last token alone
(``logits[last_token]``), so the target's law of the first two emitted tokens after a root r is
known exactly: ``P(x1, x2) = p(x1 | r) * p(x2 | x1)``. :func:`first_two_tokens` drafts and
verifies whole blocks for many independent rows at once (a second block where the first block
emitted only one token), and :func:`chi_square_pvalue` compares the counts with that law.
Used by the test suite for every method and backend; handy for checking a new verifier too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .methods import TreeConfig, build_tree, verify_mode
from .verify import verify_tree
from .warp import warp_logits


@dataclass
class TableModel:
    logits: torch.Tensor  # [V, V] float: row = last token

    @classmethod
    def random(cls, vocab: int, scale: float, generator: torch.Generator, base: "TableModel | None" = None,
               noise: float = 0.0):
        if base is None:
            return cls(torch.randn(vocab, vocab, generator=generator, dtype=torch.float64) * scale)
        return cls(base.logits + noise * torch.randn(vocab, vocab, generator=generator, dtype=torch.float64))

    def probs(self, temperature=1.0, top_k=None, top_p=None):
        if temperature == 0:
            return torch.nn.functional.one_hot(self.logits.argmax(-1), self.logits.shape[-1]).double()
        return torch.softmax(warp_logits(self.logits, temperature, top_k, top_p), -1)


def _block(config, roots, target, draft, temperature, top_k, top_p, seed, offset, backend, verify_backend,
           verifier="rrs", merge=False):
    def draft_fn(level, nodes, tokens, parents):
        return draft.logits[tokens.gather(1, nodes.clamp(min=0))]

    drafted = build_tree(config, roots, draft_fn, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                         offset=offset, backend=backend, merge=merge)
    tree = drafted.tree
    mode = "greedy" if temperature == 0 else verify_mode(config, verifier, merged=merge)
    res = verify_tree(target.logits[tree.tokens], drafted.draft_logits, tree, mode=mode, temperature=temperature,
                      top_k=top_k, top_p=top_p, seed=seed, offset=offset + 1000, backend=verify_backend)
    emitted = torch.where(res.path >= 0, tree.tokens.gather(1, res.path.clamp(min=0)), -1)[:, 1:]
    rows = torch.arange(roots.shape[0])
    out = torch.cat([emitted, torch.full_like(emitted[:, :1], -1)], 1)
    out[rows, res.num_accepted] = res.next_token
    return out  # [B, max_depth + 1]: emitted tokens, -1 padded


def first_two_tokens(config: TreeConfig, target: TableModel, draft: TableModel, *, root: int, n: int, seed: int,
                     temperature=1.0, top_k=None, top_p=None, backend="torch", verify_backend=None, verifier="rrs",
                     merge=False):
    """``[n, 2]`` first two tokens emitted after ``root`` by draft-and-verify blocks.

    ``verifier`` ``"rrs"`` or ``"traversal"`` (:func:`rsd_kernels.methods.verify_mode`: SpecTr's
    unmerged chains take ``kseq``); ``merge=True`` merges SpecTr's chains into a prefix tree."""
    verify_backend = verify_backend or backend
    roots = torch.full((n,), root, dtype=torch.int64)
    ver = dict(verifier=verifier, merge=merge)
    first = _block(config, roots, target, draft, temperature, top_k, top_p, seed, 0, backend, verify_backend, **ver)
    need = first[:, 1] < 0
    if bool(need.any()):
        second = _block(config, first[need, 0].contiguous(), target, draft, temperature, top_k, top_p, seed, 1 << 20,
                        backend, verify_backend, **ver)
        first[need, 1] = second[:, 0]
    return first[:, :2]


def expected_pairs(target: TableModel, root: int, temperature=1.0, top_k=None, top_p=None) -> torch.Tensor:
    """``[V, V]`` law of the first two tokens under the target alone."""
    p = target.probs(temperature, top_k, top_p)
    return p[root][:, None] * p


def chi_square_pvalue(pairs: torch.Tensor, expected: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson chi-square p-value of observed pairs against ``expected`` probabilities.

    Cells with expected count below ``min_expected`` are pooled into one cell. A pair the
    target gives probability 0 makes the p-value 0.
    """
    from scipy.stats import chisquare

    V = expected.shape[0]
    n = pairs.shape[0]
    counts = torch.bincount(pairs[:, 0] * V + pairs[:, 1], minlength=V * V).double()
    exp = expected.flatten() * n
    if bool(((exp == 0) & (counts > 0)).any()):
        return 0.0
    small = exp < min_expected
    obs_cells = torch.cat([counts[~small], counts[small].sum()[None]])
    exp_cells = torch.cat([exp[~small], exp[small].sum()[None]])
    keep = exp_cells > 0
    return float(chisquare(obs_cells[keep].numpy(), exp_cells[keep].numpy() * (n / exp_cells[keep].sum().item())).pvalue)
