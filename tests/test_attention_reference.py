import math

import pytest
import torch

import rsd_kernels as rk


def random_tree(B, T, g):
    parents = [[-1] + [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, T)] for _ in range(B)]
    return rk.DraftTree.from_lists([[0] * T] * B, parents)


def causal_attention(q, k, v, scale):
    s = (q @ k.transpose(-1, -2)) * scale
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("Hq,Hkv,D", [(2, 2, 16), (6, 2, 8), (3, 1, 64)])
def test_equals_causal_attention_along_every_path(Hq, Hkv, D):
    g = torch.Generator().manual_seed(Hq * 10 + D)
    B, T, S = 2, 7, 20
    tree = random_tree(B, T, g)
    prefix = torch.tensor([5, 11])
    q = torch.randn(B, Hq, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
    out = rk.tree_attention(q, k, v, tree, prefix)
    scale = 1 / math.sqrt(D)
    grp = Hq // Hkv
    for b in range(B):
        P = int(prefix[b])
        for i in range(T):
            path = tree.path_to(b, i)  # the sequence this node continues: prefix + path
            keys = list(range(P)) + [P + j for j in path]
            for h in range(Hq):
                want = causal_attention(q[b, h, i : i + 1], k[b, h // grp, keys], v[b, h // grp, keys], scale)
                assert torch.allclose(out[b, h, i], want[0], atol=1e-10)


def test_bitmask_input_and_dtypes():
    g = torch.Generator().manual_seed(0)
    tree = random_tree(1, 40, g)  # two bitmask words
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        q = torch.randn(1, 4, 40, 64, generator=g).to(dt)
        k = torch.randn(1, 2, 50, 64, generator=g).to(dt)
        v = torch.randn(1, 2, 50, 64, generator=g).to(dt)
        a = rk.tree_attention(q, k, v, tree.ancestor_bitmask, 3)
        b = rk.tree_attention(q.double(), k.double(), v.double(), tree, torch.tensor([3]))
        assert a.dtype == dt
        tol = 1e-5 if dt == torch.float32 else 2e-2
        assert torch.allclose(a.double(), b, atol=tol, rtol=tol)


def test_attention_bad_input():
    g = torch.Generator().manual_seed(0)
    tree = random_tree(1, 4, g)
    q, k, v = torch.randn(1, 3, 4, 8), torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    with pytest.raises(ValueError, match="multiple of the KV heads"):
        rk.tree_attention(q, k, v, tree, 0)
    q = torch.randn(1, 4, 4, 8)
    with pytest.raises(ValueError, match="prefix_lens \\+ T must be within the cache length"):
        rk.tree_attention(q, k, v, tree, 7)
    with pytest.raises(TypeError, match="k must have dtype float16"):
        rk.tree_attention(q.half(), k, v, tree, 0)
    with pytest.raises(ValueError, match="v must have shape"):
        rk.tree_attention(q, k, v[:, :, :5], tree, 0)
    with pytest.raises(ValueError, match="tree must have shape"):
        rk.tree_attention(q, k, v, torch.zeros(1, 3, 1, dtype=torch.int32), 0)
    with pytest.raises(ValueError, match="tree has shape"):
        rk.tree_attention(q[:, :, :3], k, v, tree, 0)
