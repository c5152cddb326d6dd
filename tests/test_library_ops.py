"""``torch.ops.rsd.*``: schemas, fake implementations (opcheck) and torch.compile on CPU."""
import math

import pytest
import torch

from rsd_kernels import DraftTree, backends, noise
from rsd_kernels import library  # noqa: F401  registers torch.ops.rsd
from rsd_kernels.attention import reference as attn_ref
from rsd_kernels.verify import reference as verify_ref


def _tree(B=2, T=5, V=11):
    parents = torch.tensor([[-1, 0, 0, 1, 2], [-1, 0, 1, 1, 0]], dtype=torch.int32)[:B, :T]
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    return DraftTree(tokens, parents.contiguous())


def _verify_args(mode="rrs"):
    B, T, V = 2, 5, 11
    tree = _tree(B, T, V)
    gen = torch.Generator().manual_seed(1)
    tl_, dl = torch.randn(B, T, V, generator=gen), torch.randn(B, T, V, generator=gen)
    u, g = noise.verify_noise(3, 0, B, T, V)
    return (tl_, dl, tree.tokens, tree.parents, tree.num_nodes, mode, 1.0, tree.max_depth, u, g, None, 0, "torch")


def _attention_args():
    gen = torch.Generator().manual_seed(2)
    B, Hq, Hkv, T, D, S = 2, 4, 2, 5, 64, 20
    q = torch.randn(B, Hq, T, D, generator=gen)
    k, v = torch.randn(B, Hkv, S, D, generator=gen), torch.randn(B, Hkv, S, D, generator=gen)
    return (q, k, v, _tree(B, T).ancestor_bitmask, torch.tensor([3, 15]), 1 / math.sqrt(D), "torch")


def _sample_args():
    logits = torch.randn(3, 17, generator=torch.Generator().manual_seed(4))
    return (logits, torch.tensor([2, 4, 1], dtype=torch.int32), 4, 1.0, noise.gumbel_noise(1, 0, 3, 17), None, 0,
            "torch")


def _beam_args():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 13, generator=gen)
    return (logits, -torch.rand(2, 3, generator=gen), torch.randn(2, 3, generator=gen), 4, 1.0,
            noise.gumbel_noise(2, 0, 6, 13).view(2, 3, 13), None, 0, "torch")


CASES = {
    "verify_tree": (lambda: torch.ops.rsd.verify_tree, _verify_args),
    "tree_attention": (lambda: torch.ops.rsd.tree_attention, _attention_args),
    "sample_without_replacement": (lambda: torch.ops.rsd.sample_without_replacement, _sample_args),
    "stochastic_beam_step": (lambda: torch.ops.rsd.stochastic_beam_step, _beam_args),
}


def _backends():
    from conftest import DEVICE

    out = ["torch"]
    if "triton" in backends.available("tree_attention", DEVICE) and DEVICE == "cpu":
        out.append("triton")  # under the interpreter: inputs here are CPU tensors
    return out


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("name", list(CASES))
def test_opcheck(name, backend):
    op, args = CASES[name]
    args = args()[:-1] + (backend,)
    torch.library.opcheck(op(), args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_ops_return_the_reference_results():
    args = _verify_args()
    got = torch.ops.rsd.verify_tree(*args)
    want = verify_ref.verify(*args[:8], uniform=args[8], gumbel=args[9])
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    a = _attention_args()
    assert torch.equal(torch.ops.rsd.tree_attention(*a), attn_ref.tree_attention(*a[:-1]))


def test_torch_compile_graph_with_custom_ops():
    def step(q, k, v, bits, prefix, scale, tl_, dl, tokens, parents, nn, u, g):
        h = torch.ops.rsd.tree_attention(q, k, v, bits, prefix, scale, "torch") * 2.0
        path, nacc, nxt = torch.ops.rsd.verify_tree(tl_, dl, tokens, parents, nn, "rrs", 1.0, 2, u, g, None, 0,
                                                    "torch")
        return h.sum(-1), nacc + 1, nxt

    a = _attention_args()[:-1]
    vargs = _verify_args()
    args = (*a, *vargs[:5], vargs[8], vargs[9])
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for x, y in zip(compiled(*args), step(*args)):
        assert torch.equal(x, y)
