"""The four methods' draft trees (SPEC section 4), independent of any model.

A :class:`TreeConfig` fixes the tree shape; :func:`build_tree` grows it level by level with one
call of a user ``draft_fn`` per level (the method's "draft calls per block"); and
:func:`configs_for_budget` enumerates every configuration whose budget (non-root nodes) equals
a given number.

=========  ===================  ======================  ================  ===========
method     shape                tree                    budget            verify mode
=========  ===================  ======================  ================  ===========
``sd``     ``(L,)``             one chain               L                 ``rrs``
``spectr`` ``(K, L)``           K i.i.d. chains, K>=2   K*L               ``kseq``
``rsd-c``  ``(b_1, .., b_L)``   constant branching      sum_l prod b_j    ``rrs``
``rsd-s``  ``(W, L)``           stochastic beam, W>=2   W*L               ``rrs``
=========  ===================  ======================  ================  ===========

Depth (draft calls) is capped at :data:`DEFAULT_MAX_DEPTH` for SpecTr, RSD-C and RSD-S
enumerations unless ``max_depth`` says otherwise (SD's depth is its budget).

SpecTr's chains can also be merged into a prefix tree (``build_tree(..., merge=True)``,
:func:`merge_spectr_tree`): identical prefixes become one node, children in order of first
appearance. The distinct tokens of i.i.d. draws, in order of first appearance, are a sample
without replacement, so the merged tree is verified exactly with ``rrs`` or ``traversal``
(:func:`verify_mode`), and the target verifies fewer tokens.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from . import checks
from .sampling import sample_without_replacement, stochastic_beam_step
from .tree import DraftTree

METHODS = ("sd", "spectr", "rsd-c", "rsd-s")
VERIFY_MODE = {"sd": "rrs", "spectr": "kseq", "rsd-c": "rrs", "rsd-s": "rrs"}
VERIFIERS = ("rrs", "traversal")  # the verifiers of trees whose siblings are drawn without replacement
DEFAULT_MAX_DEPTH = 6
DEFAULT_DEPTH = 4  # default_config prefers the configuration whose depth is closest to this


@dataclass(frozen=True)
class TreeConfig:
    method: str
    shape: tuple

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        shape = tuple(self.shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"{self.method} shape must be positive ints, got {self.shape!r}")
        want = {"sd": 1, "spectr": 2, "rsd-s": 2}.get(self.method)
        if want is not None and len(shape) != want:
            raise ValueError(f"{self.method} shape needs {want} numbers, got {shape}")
        if self.method in ("spectr", "rsd-s") and shape[0] < 2:
            raise ValueError(f"{self.method} needs a width of at least 2 (width 1 is SD), got {shape}")
        object.__setattr__(self, "shape", shape)

    @property
    def depth(self) -> int:
        """Sequential draft calls per block (the L of MBSU)."""
        return self.shape[-1] if self.method in ("spectr", "rsd-s") else len(self.shape) if self.method == "rsd-c" else self.shape[0]

    @property
    def budget(self) -> int:
        if self.method == "sd":
            return self.shape[0]
        if self.method in ("spectr", "rsd-s"):
            return self.shape[0] * self.shape[1]
        return sum(itertools.accumulate(self.shape, lambda a, b: a * b))

    @property
    def verify_mode(self) -> str:
        return VERIFY_MODE[self.method]

    def __str__(self):
        if self.method == "rsd-c":
            return f"rsd-c {','.join(map(str, self.shape))}"
        return f"{self.method} {'x'.join(map(str, self.shape))}"


def parse_config(method: str, text: str) -> TreeConfig:
    """``parse_config("rsd-s", "3x2")``, ``("rsd-c", "2,2,1")``, ``("sd", "5")``, ``("spectr", "3x2")``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    sep = "," if method == "rsd-c" else "x"
    try:
        shape = tuple(int(s) for s in str(text).split(sep))
    except ValueError:
        example = {"sd": "5", "spectr": "3x2", "rsd-c": "2,2,1", "rsd-s": "3x2"}[method]
        raise ValueError(f"cannot parse {text!r} as a {method} configuration (example: {example!r})") from None
    return TreeConfig(method, shape)


def _branchings(budget, max_depth):
    """All (b_1..b_L), L <= max_depth, with sum_l prod_{j<=l} b_j == budget."""
    out = []

    def rec(prefix, width, left):
        if left == 0:
            out.append(tuple(prefix))
            return
        if len(prefix) == max_depth:
            return
        for b in range(1, left // width + 1):
            if width * b <= left:
                rec(prefix + [b], width * b, left - width * b)

    rec([], 1, budget)
    return out


def configs_for_budget(method: str, budget: int, max_depth: int | None = None) -> list[TreeConfig]:
    """Every configuration of ``method`` with exactly ``budget`` draft nodes (depth capped).

    Raises ``ValueError`` if none fits.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    cap = DEFAULT_MAX_DEPTH if max_depth is None else max_depth
    if method == "sd":
        shapes = [(budget,)]
    elif method in ("spectr", "rsd-s"):
        shapes = [(w, budget // w) for w in range(2, budget + 1) if budget % w == 0 and budget // w <= cap]
    else:
        shapes = _branchings(budget, cap)
    if not shapes:
        raise ValueError(f"no {method} configuration has budget {budget} with depth <= {cap}")
    return [TreeConfig(method, s) for s in shapes]


def default_config(method: str, budget: int) -> TreeConfig:
    """The documented default: the configuration whose depth is closest to
    :data:`DEFAULT_DEPTH` (SD: the chain), ties broken towards the wider first level; for
    RSD-C only non-increasing branching vectors are considered when one fits."""
    cands = configs_for_budget(method, budget)
    if method == "rsd-c":
        cands = [c for c in cands if list(c.shape) == sorted(c.shape, reverse=True)] or cands
    return min(cands, key=lambda c: (abs(c.depth - DEFAULT_DEPTH), -c.shape[0], c.shape))


def verify_mode(config: TreeConfig, verifier: str = "rrs", merged: bool = False) -> str:
    """The ``verify_tree`` mode for ``config``'s trees under ``verifier`` (``"rrs"`` or
    ``"traversal"``): SpecTr's unmerged i.i.d. chains need ``"kseq"`` (and refuse traversal);
    every other tree -- merged SpecTr included -- takes the verifier itself."""
    if verifier not in VERIFIERS:
        raise ValueError(f"verifier must be one of {VERIFIERS}, got {verifier!r}")
    if config.method == "spectr" and not merged:
        if verifier == "traversal":
            raise ValueError("verifier='traversal' needs SpecTr's i.i.d. chains merged into a prefix tree "
                             "(build_tree(..., merge=True)); unmerged chains are verified with mode='kseq'")
        return "kseq"
    return verifier


class DraftedTree(NamedTuple):
    tree: DraftTree
    draft_logits: torch.Tensor | None  # [B, T, V] raw draft logits at each node (zeros at unexpanded leaves)
    draft_calls: int
    source: torch.Tensor | None = None  # [B, T] int64: each node's index in the tree as drafted (merged trees; -1 padding)


DraftFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def build_tree(config: TreeConfig, root_tokens: torch.Tensor, draft_fn: DraftFn, *, temperature=1.0, top_k=None,
               top_p=None, generator=None, seed=None, offset=0, backend="auto", draft_logits=True,
               validate=True, merge=False) -> DraftedTree:
    """Grow ``config``'s tree from ``root_tokens [B]`` with one ``draft_fn`` call per level.

    ``draft_fn(level, nodes, tokens, parents)`` gets the ``[B, n]`` int64 indices of the nodes
    to expand (``-1`` where a row has no such node), the tree so far (``tokens [B, t]``,
    ``parents [B, t]``) and returns the draft's raw next-token logits ``[B, n, V]`` at those
    nodes. Sampling uses the warps given here; verify with the same ones. With ``seed``, level
    l draws from the Philox streams at ``offset + l``. ``draft_logits=False`` skips assembling
    the per-node draft logits (``DraftedTree.draft_logits`` is then ``None``; greedy verification
    never reads them). ``validate=False`` skips the samplers' data checks of the draft logits
    (NaN/inf), for a caller whose draft_fn output is known to be well formed. ``merge=True``
    merges SpecTr's chains into a prefix tree (:func:`merge_spectr_tree`; ``source`` maps its
    nodes to the tree as drafted); other methods' siblings are already distinct, their trees
    come back unchanged.
    """
    if not isinstance(config, TreeConfig):
        raise TypeError(f"config must be a TreeConfig, got {type(config).__name__}")
    checks.tensor("root_tokens", root_tokens, ndim=1, dtypes=(torch.int64,))
    if root_tokens.shape[0] == 0:
        raise ValueError("root_tokens must hold at least one row, got shape (0,)")
    if not callable(draft_fn):
        raise TypeError(f"draft_fn must be callable, got {type(draft_fn).__name__}")
    B, dev = root_tokens.shape[0], root_tokens.device
    cols_tok, cols_par, cols_ok = [root_tokens], [torch.full((B,), -1, dtype=torch.long, device=dev)], [
        torch.ones(B, dtype=torch.bool, device=dev)]
    expanded: list[tuple[torch.Tensor, torch.Tensor]] = []  # (node column [B], logits [B, V])
    samp = dict(temperature=temperature, top_k=top_k, top_p=top_p, backend=backend, validate=validate)

    def noise(level):
        return {"generator": generator} if seed is None else {"seed": seed, "offset": offset + level}

    def expand(level, nodes):
        tok = torch.stack(cols_tok, 1)
        par = torch.stack(cols_par, 1).to(torch.int32)
        lg = draft_fn(level, nodes, tok, par)
        if not isinstance(lg, torch.Tensor):
            raise TypeError(f"draft_fn must return a tensor of logits [B, n, V], got {type(lg).__name__} at level {level}")
        if lg.dim() != 3 or lg.shape[:2] != nodes.shape:
            raise ValueError(f"draft_fn returned logits of shape {tuple(lg.shape)} for {tuple(nodes.shape)} nodes"
                             f" at level {level}: expected [B, n, V] = [{nodes.shape[0]}, {nodes.shape[1]}, V]")
        if lg.dtype not in checks.FLOAT_DTYPES:
            raise TypeError(f"draft_fn returned logits of dtype {str(lg.dtype).replace('torch.', '')} at level {level}:"
                            " expected a floating dtype")
        if lg.device != dev:
            raise ValueError(f"draft_fn returned logits on {lg.device} at level {level}, but root_tokens is on {dev}")
        if expanded and lg.shape[-1] != expanded[0][1].shape[-1]:
            raise ValueError(f"draft_fn returned a vocabulary of {lg.shape[-1]} tokens at level {level}, but"
                             f" {expanded[0][1].shape[-1]} at level 0: the vocabulary size must not change")
        if not expanded:
            if lg.shape[-1] == 0:
                raise ValueError("draft_fn returned logits with an empty vocabulary (V = 0)")
            checks.token_ids("root_tokens", root_tokens, lg.shape[-1])
        expanded.extend((nodes[:, j], lg[:, j]) for j in range(nodes.shape[1]))
        return lg

    def add(tokens, parents, ok):  # tokens/parents/ok [B, n]
        for j in range(tokens.shape[1]):
            cols_tok.append(torch.where(ok[:, j], tokens[:, j], 0))
            cols_par.append(torch.where(ok[:, j], parents[:, j], -1))
            cols_ok.append(ok[:, j])

    m, shape = config.method, config.shape
    frontier = torch.zeros(B, 1, dtype=torch.long, device=dev)
    if m == "sd" or m == "spectr":
        width = 1 if m == "sd" else shape[0]
        for level in range(config.depth):
            lg = expand(level, frontier)
            V = lg.shape[-1]
            if level == 0 and width > 1:  # K i.i.d. draws at the root: one Gumbel-max per copy
                lg = lg.expand(B, width, V)
            s = sample_without_replacement(lg.reshape(-1, V), 1, **samp, **noise(level))
            tok = s.tokens.view(B, width)
            ok = (tok >= 0) & (frontier >= 0)
            start = len(cols_tok)
            add(tok, frontier.expand(B, width), ok)
            frontier = torch.where(ok, torch.arange(start, start + width, device=dev)[None, :], -1)
    elif m == "rsd-c":
        for level, b in enumerate(shape):
            lg = expand(level, frontier)
            n, V = frontier.shape[1], lg.shape[-1]
            s = sample_without_replacement(lg.reshape(-1, V), min(b, V), **samp, **noise(level))
            tok = s.tokens.view(B, n * min(b, V))
            par = frontier.repeat_interleave(min(b, V), dim=1)
            ok = (tok >= 0) & (par >= 0)
            start = len(cols_tok)
            add(tok, par, ok)
            frontier = torch.where(ok, torch.arange(start, start + tok.shape[1], device=dev)[None, :], -1)
    else:  # rsd-s
        W = shape[0]
        phi = torch.zeros(B, 1, device=dev)
        G = torch.zeros(B, 1, device=dev)
        for level in range(config.depth):
            lg = expand(level, frontier)
            phi = torch.where(frontier >= 0, phi, float("-inf"))
            if temperature == 0:  # deterministic beam search: G = phi
                lq = torch.log_softmax(lg.float(), -1) + phi[..., None]
                top = torch.topk(lq.reshape(B, -1), min(W, lq[0].numel()), dim=-1)
                okk = torch.isfinite(top.values)
                parent_slot = torch.where(okk, top.indices // lg.shape[-1], -1)
                tok, phi_new, G_new = torch.where(okk, top.indices % lg.shape[-1], -1), top.values, top.values
            else:
                r = stochastic_beam_step(lg, phi, G, min(W, lg.shape[1] * lg.shape[2]), **samp, **noise(level))
                parent_slot, tok, phi_new, G_new = r.parent, r.tokens, r.phi.float(), r.G.float()
            ok = parent_slot >= 0
            par = torch.where(ok, frontier.gather(1, parent_slot.clamp(min=0)), -1)
            ok = ok & (par >= 0)
            start = len(cols_tok)
            add(tok, par, ok)
            frontier = torch.where(ok, torch.arange(start, start + tok.shape[1], device=dev)[None, :], -1)
            phi, G = phi_new, G_new
    out = _assemble(cols_tok, cols_par, cols_ok, expanded if draft_logits else None, config.depth)
    return merge_spectr_tree(out) if merge and m == "spectr" else out


def merge_spectr_tree(drafted: DraftedTree) -> DraftedTree:
    """Merge identical prefixes: a node whose parent (after merging) already has a child with
    its token becomes that child. The kept nodes stay in index order, so children come in order
    of first appearance -- for SpecTr's chains (chain order within a level) a sample without
    replacement of the draft at their parent, verifiable with ``rrs`` or ``traversal``.
    Returns the merged tree (ragged rows), the kept nodes' draft logits and ``source``, each
    merged node's index in ``drafted.tree``.
    """
    tree = drafted.tree
    tok, par, valid = tree.tokens, tree.parents.long(), tree.valid
    B, T = tok.shape
    idx = torch.arange(T, device=tok.device)
    rep = idx.expand(B, T).clone()  # rep[b, j]: the merged node of node j (its first occurrence)
    for j in range(1, T):
        par_rep = rep.gather(1, par[:, j:j + 1].clamp(min=0))
        earlier_par_rep = rep.gather(1, par[:, :j].clamp(min=0))
        same = (valid[:, :j] & (idx[:j] > 0) & (rep[:, :j] == idx[:j]) & (earlier_par_rep == par_rep)
                & (tok[:, :j] == tok[:, j:j + 1]))
        rep[:, j] = torch.where(valid[:, j] & same.any(1), same.long().argmax(1), j)
    keep = valid & (rep == idx)
    n = keep.sum(1)
    Tm = int(n.max())
    source = torch.argsort((~keep).long(), dim=1, stable=True)[:, :Tm]  # kept nodes first, in index order
    in_row = idx[None, :Tm] < n[:, None]
    new_idx = torch.cumsum(keep.long(), 1) - 1  # a kept node's index in the merged tree
    par_m = new_idx.gather(1, rep.gather(1, par.clamp(min=0)).gather(1, source))
    par_m = torch.where(in_row & (idx[None, :Tm] > 0), par_m, -1)
    tok_m = torch.where(in_row, tok.gather(1, source), 0)
    dl = drafted.draft_logits
    dl_m = None if dl is None else dl.gather(1, source[..., None].expand(B, Tm, dl.shape[-1]))
    if drafted.source is not None:  # merging a merged tree: map to the tree as drafted
        source = drafted.source.gather(1, source)
    merged = DraftTree(tok_m, par_m.to(torch.int32), n.to(torch.int32))
    return DraftedTree(merged, dl_m, drafted.draft_calls, torch.where(in_row, source, -1))


def _assemble(cols_tok, cols_par, cols_ok, expanded, calls):
    tok = torch.stack(cols_tok, 1)
    par = torch.stack(cols_par, 1)
    ok = torch.stack(cols_ok, 1)
    B, T = tok.shape
    dl = None
    if expanded is not None:
        V, dtype = expanded[0][1].shape[-1], expanded[0][1].dtype
        dl = torch.zeros(B, T, V, dtype=dtype, device=tok.device)
        rows = torch.arange(B, device=tok.device)
        for col, lg in expanded:
            has = col >= 0
            dl[rows[has], col[has]] = lg[has]
    if bool(ok.all()):
        return DraftedTree(DraftTree(tok, par.to(torch.int32)), dl, calls)
    # ragged rows: pack each row's real nodes to the front, keeping their order
    new_idx = torch.cumsum(ok.long(), 1) - 1
    order = torch.argsort((~ok).long(), dim=1, stable=True)
    tok_c = tok.gather(1, order)
    par_c = par.gather(1, order)
    par_c = torch.where(par_c >= 0, new_idx.gather(1, par_c.clamp(min=0)), -1)
    dl_c = None if dl is None else dl.gather(1, order[..., None].expand(B, T, dl.shape[-1]))
    n = ok.sum(1).to(torch.int32)
    keep = torch.arange(T, device=tok.device)[None, :] < n[:, None]
    tok_c = torch.where(keep, tok_c, 0)
    par_c = torch.where(keep, par_c, -1)
    par_c[:, 0] = -1
    return DraftedTree(DraftTree(tok_c, par_c.to(torch.int32), n), dl_c, calls)
