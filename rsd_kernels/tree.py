"""The draft tree: the one layout every kernel and the decoding loop share (SPEC section 1).

Per batch row, ``T`` nodes in topological order. ``tokens [B, T]`` int64 holds each node's
token (node 0 is the root, the last committed token), ``parents [B, T]`` int32 the parent
index (``-1`` for the root, ``parents[i] < i``), and the optional ``num_nodes [B]`` int32
makes rows ragged (nodes ``>= num_nodes[b]`` are padding and are ignored). Siblings appear in
sampling order. Everything else is derived here, never stored twice.
"""
from __future__ import annotations

import functools

import torch

from . import checks

MAX_NODES = 1024  # the bitmask and the kernels' per-row state are sized for this


class DraftTree:
    """A batch of draft trees with its derived views.

    Args:
        tokens: ``[B, T]`` int64 token ids.
        parents: ``[B, T]`` int32 parent indices.
        num_nodes: optional ``[B]`` int32, the number of real nodes per row (1..T).
        vocab_size: when given, token ids must lie in ``[0, vocab_size)``.

    Raises ``TypeError``/``ValueError`` naming the argument for every malformed input.
    """

    def __init__(self, tokens, parents, num_nodes=None, *, vocab_size=None):
        checks.tensor("tokens", tokens, ndim=2, dtypes=(torch.int64,))
        checks.tensor("parents", parents, ndim=2, dtypes=(torch.int32,), device=tokens.device, shape=tokens.shape)
        B, T = tokens.shape
        if B == 0 or T == 0:
            raise ValueError(f"tokens must have at least one row and one node, got shape {tuple(tokens.shape)}")
        if T > MAX_NODES:
            raise ValueError(f"at most {MAX_NODES} nodes per tree are supported, got T={T}")
        if num_nodes is None:
            num_nodes = torch.full((B,), T, dtype=torch.int32, device=tokens.device)
        checks.tensor("num_nodes", num_nodes, ndim=1, dtypes=(torch.int32,), device=tokens.device, shape=(B,))
        if ((num_nodes < 1) | (num_nodes > T)).any():
            raise ValueError(f"num_nodes must lie in [1, {T}], got {num_nodes.tolist()}")
        self.tokens, self.parents, self.num_nodes = tokens, parents, num_nodes
        self.valid = torch.arange(T, device=tokens.device)[None, :] < num_nodes[:, None].long()
        self._validate(vocab_size)

    def _validate(self, vocab_size):
        p, valid = self.parents.long(), self.valid
        if (p[:, 0] != -1).any():
            b = int((p[:, 0] != -1).nonzero()[0])
            raise ValueError(f"parents[{b}, 0] must be -1: node 0 is the root, got {int(p[b, 0])}")
        idx = torch.arange(p.shape[1], device=p.device)[None, :]
        bad = valid & (idx > 0) & ((p < 0) | (p >= idx))
        if bad.any():
            b, i = (int(v) for v in bad.nonzero()[0])
            what = "only node 0 may be the root" if int(p[b, i]) < 0 else "a parent must come before its child"
            raise ValueError(f"parents[{b}, {i}] = {int(p[b, i])} is invalid: {what}")
        if vocab_size is not None:
            checks.positive_int("vocab_size", vocab_size)
            t = self.tokens
            out = valid & ((t < 0) | (t >= vocab_size))
            if out.any():
                b, i = (int(v) for v in out.nonzero()[0])
                raise ValueError(f"tokens[{b}, {i}] = {int(t[b, i])} is out of range for vocab_size={vocab_size}")

    # ---- shapes -------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def max_nodes(self) -> int:
        return self.tokens.shape[1]

    @property
    def device(self):
        return self.tokens.device

    @property
    def budget(self) -> torch.Tensor:
        """Non-root nodes per row: the draft tokens the target verifies."""
        return self.num_nodes - 1

    # ---- derived views --------------------------------------------------------------
    def _parents_masked(self):
        """Parents with padding nodes attached to nothing (-1)."""
        return torch.where(self.valid, self.parents.long(), -1)

    @functools.cached_property
    def depth(self) -> torch.Tensor:
        """``[B, T]`` int32 depth (root 0; padding nodes 0)."""
        p = self._parents_masked()
        # pointer jumping (list ranking): ceil(log2 T) steps; the root and padding point to themselves
        anc = torch.where(p >= 0, p, torch.arange(p.shape[1], device=p.device)[None, :])
        d = (p >= 0).long()
        for _ in range(max(1, (p.shape[1] - 1).bit_length())):
            d = d + d.gather(1, anc)
            anc = anc.gather(1, anc)
        return d.to(torch.int32)

    @functools.cached_property
    def max_depth(self) -> int:
        return int(self.depth.max())

    def position_ids(self, prefix_lens) -> torch.Tensor:
        """``[B, T]`` int64: ``prefix_len + depth`` with the root at ``prefix_len``.

        ``prefix_lens`` is an int or ``[B]`` tensor: the number of tokens before the root.
        """
        if isinstance(prefix_lens, int):
            prefix_lens = torch.full((self.batch_size,), prefix_lens, dtype=torch.int64, device=self.device)
        checks.tensor("prefix_lens", prefix_lens, ndim=1, dtypes=(torch.int32, torch.int64), shape=(self.batch_size,))
        return prefix_lens.to(self.device, torch.int64)[:, None] + self.depth.long()

    @functools.cached_property
    def first_child(self) -> torch.Tensor:
        """``[B, T]`` int32: the first child in sampling order, ``-1`` if none."""
        return self._child_links[0]

    @functools.cached_property
    def next_sibling(self) -> torch.Tensor:
        """``[B, T]`` int32: the next sibling in sampling order, ``-1`` if none."""
        return self._child_links[1]

    @functools.cached_property
    def _child_links(self):
        p = self._parents_masked()
        B, T = p.shape
        first = torch.full((B, T), -1, dtype=torch.int64, device=self.device)
        nxt = torch.full((B, T), -1, dtype=torch.int64, device=self.device)
        last = torch.full((B, T), -1, dtype=torch.int64, device=self.device)  # last child so far
        rows = torch.arange(B, device=self.device)
        for i in range(1, T):
            has = p[:, i] >= 0
            par = p[:, i].clamp(min=0)
            prev = last[rows, par]
            r = rows[has & (prev < 0)]
            first[r, par[r]] = i
            r = rows[has & (prev >= 0)]
            nxt[r, prev[r]] = i
            r = rows[has]
            last[r, par[r]] = i
        return first.to(torch.int32), nxt.to(torch.int32)

    def children(self, b: int, i: int) -> list[int]:
        """Children of node ``i`` in row ``b``, in sampling order."""
        out, c = [], int(self.first_child[b, i])
        while c >= 0:
            out.append(c)
            c = int(self.next_sibling[b, c])
        return out

    @functools.cached_property
    def ancestor_bitmask(self) -> torch.Tensor:
        """``[B, T, ceil(T/32)]`` int32: bit j of row i set iff j is i or an ancestor of i."""
        dense = self.dense_mask
        B, T, _ = dense.shape
        W = (T + 31) // 32
        padded = torch.zeros(B, T, W * 32, dtype=torch.int64, device=self.device)
        padded[:, :, :T] = dense.long()
        weights = torch.ones(32, dtype=torch.int64, device=self.device) << torch.arange(32, device=self.device)
        words = (padded.view(B, T, W, 32) * weights).sum(-1)
        return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)

    @functools.cached_property
    def dense_mask(self) -> torch.Tensor:
        """``[B, T, T]`` bool: ``[b, i, j]`` iff node j is node i or one of its ancestors."""
        p = self._parents_masked()
        B, T = p.shape
        m = torch.eye(T, dtype=torch.bool, device=self.device).expand(B, T, T).clone()
        rows = torch.arange(B, device=self.device)[:, None].expand(B, T)
        cols = torch.arange(T, device=self.device)[None, :].expand(B, T)
        cur = p  # one step per depth level: every node marks its ancestor at that distance
        while True:
            has = cur >= 0
            if not bool(has.any()):
                return m
            m[rows[has], cols[has], cur[has]] = True
            cur = torch.where(has, p.gather(1, cur.clamp(min=0)), -1)

    def attention_mask_4d(self, prefix_lens, total_len: int, dtype=torch.float32) -> torch.Tensor:
        """Additive ``[B, 1, T, total_len]`` mask for a ``transformers`` forward over the tree.

        The tree's keys sit at ``prefix_lens[b] .. prefix_lens[b] + T - 1``; every node sees the
        whole prefix and its ancestors-or-self. Masked entries hold the dtype's minimum.
        """
        allowed = tree_key_mask(self.dense_mask, prefix_lens, total_len)
        out = torch.zeros(allowed.shape, dtype=dtype, device=self.device)
        return out.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]

    def path_to(self, b: int, i: int) -> list[int]:
        """Node indices from the root to node ``i`` (inclusive) in row ``b``."""
        out = []
        while i >= 0:
            out.append(i)
            i = int(self.parents[b, i]) if i > 0 else -1
        return out[::-1]

    def __repr__(self):
        return f"DraftTree(batch={self.batch_size}, max_nodes={self.max_nodes}, max_depth={self.max_depth})"

    @classmethod
    def from_lists(cls, tokens, parents, *, device=None, vocab_size=None):
        """Build from Python lists: one row (``[5, 1, 2]``, ``[-1, 0, 0]``) or a list of rows;
        ragged rows are padded. Entries must be ints (Python, NumPy or one-element integer
        tensors): floats and bools raise ``TypeError`` naming the entry."""
        for name, x in (("tokens", tokens), ("parents", parents)):
            if not isinstance(x, (list, tuple)):
                raise TypeError(f"{name} must be a list (one row) or a list of lists (rows), got {type(x).__name__}")
        if len(tokens) == 0:
            raise ValueError("tokens is empty: a tree needs at least its root")
        nested = isinstance(tokens[0], (list, tuple))
        if len(parents) and isinstance(parents[0], (list, tuple)) != nested:
            raise ValueError("parents must be a list of lists exactly when tokens is (one row or rows)")
        if not nested:
            tokens, parents = [tokens], [parents]
        if len(tokens) != len(parents):
            raise ValueError(f"parents has {len(parents)} rows but tokens has {len(tokens)}")
        tok_rows, par_rows = [], []
        for b, (t, p) in enumerate(zip(tokens, parents)):
            for name, x in (("tokens", t), ("parents", p)):
                if not isinstance(x, (list, tuple)):
                    raise TypeError(f"{name}[{b}] must be a list, got {type(x).__name__}")
            if len(t) == 0:
                raise ValueError(f"tokens[{b}] is empty: every row needs at least its root")
            if len(t) != len(p):
                raise ValueError(f"parents[{b}] has {len(p)} entries but tokens[{b}] has {len(t)}")
            tok_rows.append(checks.int_values(f"tokens[{b}]", t, lo=-2**63, hi=2**63))
            par_rows.append(checks.int_values(f"parents[{b}]", p, lo=-2**31, hi=2**31))
        T = max(len(t) for t in tok_rows)
        tok = torch.zeros(len(tok_rows), T, dtype=torch.int64)
        par = torch.full((len(tok_rows), T), -1, dtype=torch.int32)
        for b, (t, p) in enumerate(zip(tok_rows, par_rows)):
            tok[b, : len(t)] = torch.tensor(t, dtype=torch.int64)
            par[b, : len(p)] = torch.tensor(p, dtype=torch.int32)
        n = torch.tensor([len(t) for t in tok_rows], dtype=torch.int32)
        return cls(tok.to(device), par.to(device), n.to(device), vocab_size=vocab_size)


def tree_key_mask(dense_mask: torch.Tensor, prefix_lens, total_len: int) -> torch.Tensor:
    """``[B, T, total_len]`` bool: which cache keys each tree node may attend to."""
    B, T, _ = dense_mask.shape
    dev = dense_mask.device
    if isinstance(prefix_lens, int):
        prefix_lens = torch.full((B,), prefix_lens, dtype=torch.int64, device=dev)
    pl = prefix_lens.to(dev, torch.int64)
    if (pl < 0).any() or (pl + T > total_len).any():
        raise ValueError(f"prefix_lens + T must fit the cache length {total_len}; got prefix_lens={pl.tolist()}, T={T}")
    s = torch.arange(total_len, device=dev)[None, None, :]
    rel = s - pl[:, None, None]  # position relative to the root
    in_prefix = rel < 0
    in_tree = (rel >= 0) & (rel < T)
    tree_allowed = torch.gather(dense_mask, 2, rel.clamp(0, T - 1).expand(B, T, total_len))
    return in_prefix | (in_tree & tree_allowed)
