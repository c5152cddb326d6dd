"""Bad input that used to slip through (issue 13): each raises ValueError/TypeError naming the argument.

Each test below failed on the code before the fix (silent truncation, a ZeroDivisionError,
an error only later in another op, an internal shape-mismatch RuntimeError, or an accidental
message from Python or torch).
"""
import pytest
import torch

import rsd_kernels as rk


# ---- 1. DraftTree.from_lists truncated floats to ints ----
@pytest.mark.parametrize("tokens,parents,name", [
    ([5, 1.5, 2.7], [-1, 0, 0], "tokens"),
    ([5, 1, 2], [-1, 0, 0.9], "parents"),
    ([[5, 1], [5, 2.0]], [[-1, 0], [-1, 0]], "tokens"),
    ([5, True], [-1, 0], "tokens"),
    ([5, "1"], [-1, 0], "tokens"),
    ([5, 1], [-1, None], "parents"),
])
def test_from_lists_rejects_non_integer_entries(tokens, parents, name):
    with pytest.raises(TypeError, match=rf"^{name}\["):
        rk.DraftTree.from_lists(tokens, parents)


def test_from_lists_accepts_integer_scalars():
    import numpy as np

    t = rk.DraftTree.from_lists([np.int64(5), torch.tensor(1), 2], [-1, np.int32(0), 0])
    assert t.tokens.tolist() == [[5, 1, 2]] and t.parents.tolist() == [[-1, 0, 0]]


def test_from_lists_rejects_out_of_range_ints():
    with pytest.raises(ValueError, match=r"^parents\[0\]\[1\]"):
        rk.DraftTree.from_lists([5, 1], [-1, 2**40])
    with pytest.raises(ValueError, match=r"^tokens\[0\]\[1\]"):
        rk.DraftTree.from_lists([5, 2**70], [-1, 0])


# ---- 5. from_lists([], []) and other accidental messages ----
@pytest.mark.parametrize("tokens,parents,exc,name", [
    ([], [], ValueError, "tokens"),
    ([[]], [[]], ValueError, "tokens"),
    ([[1], []], [[-1], []], ValueError, "tokens"),
    (5, [-1], TypeError, "tokens"),
    ([5], -1, TypeError, "parents"),
    ([[5, 1]], [-1, 0], ValueError, "parents"),
    ([5, 1], [-1], ValueError, "parents"),
    ([[5], 6], [[-1], [-1]], TypeError, "tokens"),
])
def test_from_lists_rejects_empty_and_malformed(tokens, parents, exc, name):
    with pytest.raises(exc, match=rf"^{name}"):
        rk.DraftTree.from_lists(tokens, parents)


# ---- 2. and 5. tree_attention: head dimension 0, a scale that is not a number ----
def _attn_inputs(D=8, T=3, S=6, dtype=torch.float32):
    q = torch.randn(1, 2, T, D, dtype=dtype)
    k = torch.randn(1, 1, S, D, dtype=dtype)
    v = torch.randn(1, 1, S, D, dtype=dtype)
    tree = rk.DraftTree.from_lists([1, 2, 3][:T], [-1, 0, 0][:T])
    return q, k, v, tree


def test_tree_attention_head_dim_zero():
    q, k, v, tree = _attn_inputs(D=0)
    with pytest.raises(ValueError, match=r"^q .*head dimension"):
        rk.tree_attention(q, k, v, tree, 2, backend="torch")


@pytest.mark.parametrize("scale,exc", [("x", TypeError), (None, None), (True, TypeError), (float("nan"), ValueError),
                                       (float("inf"), ValueError), ([0.5], TypeError), (0.5, None), (1, None)])
def test_tree_attention_scale(scale, exc):
    q, k, v, tree = _attn_inputs()
    if exc is None:
        out = rk.tree_attention(q, k, v, tree, 2, scale=scale, backend="torch")
        assert out.shape == q.shape
    else:
        with pytest.raises(exc, match=r"^scale"):
            rk.tree_attention(q, k, v, tree, 2, scale=scale, backend="torch")


# ---- 3. build_tree: root tokens outside the vocabulary ----
def _draft_fn(V, vary=False):
    gen = torch.Generator().manual_seed(0)

    def fn(level, nodes, tokens, parents):
        n = V + (level if vary else 0)
        return torch.randn(nodes.shape[0], nodes.shape[1], n, generator=gen)
    return fn


@pytest.mark.parametrize("root", [[-1], [16], [3, 99]])
def test_build_tree_root_tokens_out_of_vocabulary(root):
    cfg = rk.TreeConfig("rsd-c", (2, 1))
    with pytest.raises(ValueError, match=r"^root_tokens"):
        rk.build_tree(cfg, torch.tensor(root), _draft_fn(16), seed=0, backend="torch")


def test_build_tree_root_tokens_type():
    cfg = rk.TreeConfig("sd", (2,))
    with pytest.raises(TypeError, match=r"^root_tokens"):
        rk.build_tree(cfg, torch.tensor([1.0]), _draft_fn(16), seed=0, backend="torch")
    with pytest.raises(ValueError, match=r"^root_tokens"):
        rk.build_tree(cfg, torch.tensor([], dtype=torch.int64), _draft_fn(16), seed=0, backend="torch")


# ---- 4. build_tree: a draft_fn whose vocabulary changes between levels ----
@pytest.mark.parametrize("method,shape", [("sd", (3,)), ("spectr", (2, 2)), ("rsd-c", (2, 2)), ("rsd-s", (2, 3))])
def test_build_tree_draft_fn_vocabulary_changes(method, shape):
    cfg = rk.TreeConfig(method, shape)
    with pytest.raises(ValueError, match=r"^draft_fn"):
        rk.build_tree(cfg, torch.tensor([3]), _draft_fn(16, vary=True), seed=0, backend="torch")


@pytest.mark.parametrize("bad", [lambda lg: lg.tolist(), lambda lg: lg.long(), lambda lg: lg[0], lambda lg: lg[:, :0]])
def test_build_tree_draft_fn_bad_output(bad):
    cfg = rk.TreeConfig("rsd-c", (2, 1))
    fn = _draft_fn(16)
    with pytest.raises((TypeError, ValueError), match=r"^draft_fn"):
        rk.build_tree(cfg, torch.tensor([3]), lambda *a: bad(fn(*a)), seed=0, backend="torch")
