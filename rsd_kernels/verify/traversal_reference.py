"""PyTorch reference of Traversal Verification, ``verify_tree(mode="traversal")``.

Traversal Verification (Weng et al., NeurIPS 2025, arXiv 2505.12398) judges whole root-to-node
paths, deepest first; on a chain it is block verification (Sun et al., ICLR 2025, arXiv
2403.10444). Per row, a depth-first walk in post-order with early exit:

```
visit(v, p, b, s):   # p: clipped sequence-level ratio of v; b: target law at v (updated on
                     # rejections); s: draft law of v's next child
  for child c of v, in sampling order (= index order among siblings):
      p_c = min(1, p * b[c.token] / s[c.token])                        child_ratio
      if visit(c, p_c, P[c], Q[c]) accepted: return it
      r = max(p * b - s, 0); A = sum(r)                                  reject_child
      p = A / (A + 1 - p)                      (the root keeps p = 1)
      if A > 0: b = r / A
      s = s with c.token removed, renormalised  (siblings drawn without replacement)
  if v is the root or uniform[v] < p: accept the path root..v; next token ~ b
  else: v is rejected
```

``P[v], Q[v]`` are the warped target and draft distributions at node v. Siblings must have been
drawn without replacement from q, in index order (SD, RSD-C, RSD-S, and SpecTr's chains once
merged into a prefix tree, :func:`rsd_kernels.methods.merge_spectr_tree`); a tree with two
siblings holding the same token is refused by :func:`rsd_kernels.verify_tree`.

Noise: the same two streams as ``rrs``. Node v's test reads ``uniform[b, v]`` (once: every node
is tested at most once; the root's is never read, its test always passes), and the next token is
``argmax log(b) + gumbel[b]`` over ``b > 0``. Numbers: ``p_c`` is 0 when ``p * b(x) == 0``,
1 when ``p * b(x) >= s(x)``, else the quotient; ``A + 1 - p == 0`` (only ``A == 0``, ``p == 1``)
keeps ``p``; the compute dtype is float64 for float64 logits, else float32. The update functions
below are shared with the exact acceptance law (:mod:`rsd_kernels.verify.expected_length`).
The Triton kernel keeps per-rejection scalars and recomputes ``b`` and ``s`` elementwise, the CUDA
kernel keeps the path's vectors; both with these operations in this order.
"""
from __future__ import annotations

import torch

from .. import noise as _noise
from . import reference as _ref


def child_ratio(p, b_x, s_x):
    """``min(1, p * b(x) / s(x))``: 0 where ``p * b(x) == 0``, 1 where ``p * b(x) >= s(x)``."""
    num = p * b_x
    one, zero = torch.ones_like(num), torch.zeros_like(num)
    return torch.where(num <= 0, zero, torch.where(num >= s_x, one, num / torch.where(s_x > 0, s_x, one)))


def draft_after_rejection(s, x):
    """``s`` without token ``x``, renormalised: the law of the next sibling drawn without
    replacement. (Module level so a test can swap in the i.i.d. rule ``s`` -- the negative control.)"""
    onehot = torch.nn.functional.one_hot(torch.as_tensor(x, device=s.device), s.shape[-1]).bool()
    return _ref._reject_draft_token(s, onehot)


def reject_child(p, b, s, x):
    """The state ``(p, b, s)`` of a node after its child with token ``x`` was rejected
    (``p``, ``x`` of shape ``[...]``, ``b``, ``s`` of shape ``[..., V]``)."""
    r = torch.clamp(p[..., None] * b - s, min=0)
    A = r.sum(-1)
    den = A + (1 - p)
    p_new = torch.where(den > 0, A / torch.where(den > 0, den, torch.ones_like(den)), p)
    b_new = torch.where(A[..., None] > 0, r / torch.where(A > 0, A, torch.ones_like(A))[..., None], b)
    return p_new, b_new, draft_after_rejection(s, x)


def check_siblings_distinct(tree):
    """``ValueError`` unless no two siblings of a row hold the same token: traversal's update
    assumes siblings drawn without replacement (SpecTr's i.i.d. chains: merge them first)."""
    tok, par, valid = tree.tokens, tree.parents.long(), tree.valid
    idx = torch.arange(tok.shape[1], device=tok.device)
    real = valid & (idx > 0)[None, :]
    same = (par[:, :, None] == par[:, None, :]) & (tok[:, :, None] == tok[:, None, :])
    dup = same & real[:, :, None] & real[:, None, :] & (idx[None, :, None] > idx[None, None, :])
    if bool(dup.any()):
        b, j, i = (int(v) for v in dup.nonzero()[0])
        raise ValueError(
            f"mode='traversal' needs siblings drawn without replacement, but nodes {i} and {j} of row {b} are"
            f" siblings holding the same token {int(tok[b, j])}: merge SpecTr's i.i.d. chains into a prefix tree"
            " (rsd_kernels.methods.merge_spectr_tree) or verify them with mode='kseq'")


def with_traversal(verify_other, verify_traversal):
    """A backend's ``verify_tree`` entry point: ``mode="traversal"`` goes to ``verify_traversal``,
    the other modes to ``verify_other`` (same signature)."""

    def verify_any_mode(target_logits, draft_logits, tokens, parents, num_nodes, mode, *args, **kwargs):
        impl = verify_traversal if mode == "traversal" else verify_other
        return impl(target_logits, draft_logits, tokens, parents, num_nodes, mode, *args, **kwargs)

    verify_any_mode.__doc__ = f"{verify_other.__module__}.verify; mode='traversal': {verify_traversal.__module__}.verify"
    return verify_any_mode


def children_lists(parents_row, n):
    """``children[v]``: the children of node v among the first ``n`` nodes, in index order."""
    kids = [[] for _ in range(n)]
    for j, par in enumerate(parents_row[:n].tolist()):
        if j > 0:
            kids[par].append(j)
    return kids


def tree_links(parents, num_nodes):
    """``first_child [B, T]`` and ``next_sibling [B, T]`` (``-1``: none), siblings in index order."""
    B, T = parents.shape
    idx = torch.arange(T, device=parents.device)
    real = (idx[None, :] > 0) & (idx[None, :] < num_nodes[:, None].long())
    par = torch.where(real, parents.long(), T)  # the root and padding sort last, under a sentinel parent
    order = torch.argsort(par * T + idx[None, :], dim=1)  # by parent, then index: sibling groups
    par_sorted = par.gather(1, order)
    nxt_sorted = torch.where(torch.cat([par_sorted[:, 1:] == par_sorted[:, :-1], torch.zeros_like(real[:, :1])], 1)
                             & (par_sorted < T), torch.cat([order[:, 1:], order[:, :1]], 1), -1)
    next_sibling = torch.full((B, T), -1, dtype=torch.long, device=parents.device).scatter(1, order, nxt_sorted)
    # a node's first child: the first of its sibling group (the previous sorted entry has another parent)
    head = (par_sorted < T) & torch.cat([torch.ones_like(real[:, :1]), par_sorted[:, 1:] != par_sorted[:, :-1]], 1)
    first_child = torch.full((B, T + 1), -1, dtype=torch.long, device=parents.device)
    first_child.scatter_(1, torch.where(head, par_sorted, T), torch.where(head, order, -1))
    return first_child[:, :T], next_sibling


def verify(target_logits, draft_logits, tokens, parents, num_nodes, mode, temperature, max_depth,
           uniform=None, gumbel=None, seed=None, offset=0):
    """Backend entry point (the signature of :func:`rsd_kernels.verify.reference.verify`);
    ``mode`` must be ``"traversal"``. Returns ``(path, num_accepted, next_token)``.

    All rows walk at once, one step per iteration (descend into the next child, or test the
    current node and, if it is rejected, return to its parent), with the states of the nodes on
    each row's current path in ``[B, depth, ...]`` stacks.
    """
    if mode != "traversal":
        raise ValueError(f"the traversal reference verifies mode='traversal' only, got {mode!r}")
    B, T, V = target_logits.shape
    dev = target_logits.device
    dt = torch.float64 if target_logits.dtype == torch.float64 else torch.float32
    if uniform is None:
        uniform, gumbel = _noise.verify_noise(seed, offset, B, T, V, device=dev)
    u = uniform.to(dt)
    first_child, next_sibling = tree_links(parents, num_nodes)
    rows = torch.arange(B, device=dev)
    D = int(max_depth) + 1
    # the stacks: node, ratio p, laws b and s, last child visited (-1: none yet) at each depth of the path
    node = torch.zeros(B, D, dtype=torch.long, device=dev)
    p = torch.zeros(B, D, dtype=dt, device=dev)
    p[:, 0] = 1
    b = torch.zeros(B, D, V, dtype=dt, device=dev)
    s = torch.zeros(B, D, V, dtype=dt, device=dev)
    b[:, 0], s[:, 0] = _ref._probs(target_logits[:, 0], temperature, dt), _ref._probs(draft_logits[:, 0], temperature, dt)
    last_child = torch.full((B, D), -1, dtype=torch.long, device=dev)
    d = torch.zeros(B, dtype=torch.long, device=dev)  # depth of each row's current node
    active = torch.ones(B, dtype=torch.bool, device=dev)
    while bool(active.any()):
        cur, lc = node[rows, d], last_child[rows, d]
        c = torch.where(lc < 0, first_child.gather(1, cur[:, None])[:, 0], next_sibling.gather(1, lc.clamp(min=0)[:, None])[:, 0])
        down = active & (c >= 0)
        test = active & (c < 0)
        if bool(down.any()):  # descend into child c with its ratio from the current node's laws
            x = tokens.gather(1, c.clamp(min=0)[:, None])[:, 0]
            pc = child_ratio(p[rows, d], b[rows, d, x], s[rows, d, x])
            dn = torch.where(down, d + 1, d).clamp(max=D - 1)
            cc = c.clamp(min=0)
            last_child[rows, d] = torch.where(down, c, lc)
            for stack, new in ((node, cc), (p, pc), (last_child, torch.full_like(c, -1))):
                stack[rows, dn] = torch.where(down, new, stack[rows, dn])
            for stack, lg in ((b, target_logits), (s, draft_logits)):
                stack[rows, dn] = torch.where(down[:, None], _ref._probs(lg[rows, cc], temperature, dt), stack[rows, dn])
            d = torch.where(down, dn, d)
        if bool(test.any()):  # all children of the current node rejected: test it (the root always passes)
            accept = test & ((cur == 0) | (u.gather(1, cur[:, None])[:, 0] < p[rows, d]))
            reject = test & ~accept
            active = active & ~accept
            if bool(reject.any()):  # back to the parent, whose state takes the rejection
                dp = (d - 1).clamp(min=0)
                x = tokens.gather(1, cur[:, None])[:, 0]
                p_new, b_new, s_new = reject_child(p[rows, dp], b[rows, dp], s[rows, dp], x)
                p[rows, dp] = torch.where(reject, p_new, p[rows, dp])
                b[rows, dp] = torch.where(reject[:, None], b_new, b[rows, dp])
                s[rows, dp] = torch.where(reject[:, None], s_new, s[rows, dp])
                d = torch.where(reject, dp, d)
    last = node[rows, d]
    nxt = _ref._sample(b[rows, d], gumbel)
    path, nacc = _ref._path_from(parents, last, max_depth)
    return path, nacc, nxt
