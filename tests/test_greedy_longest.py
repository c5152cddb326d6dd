"""Greedy verification accepts the longest matching path (issue 13), on every backend.

When several siblings hold the target's argmax token (SpecTr's i.i.d. children can), the
first-match walk stopped under the first of them and lost a deeper match under a later one.
The rule now: the longest root path of matching nodes; among equally long ones the first in
sampling order. The torch reference is checked against a plain recursive oracle on random
trees with many matches; the kernels (Triton under the interpreter, CUDA under the CPU
emulation in test_cuda_emulated.py) against the reference.
"""
import pytest
import torch

from conftest import kernel_backend_params
from rsd_kernels import DraftTree, verify_tree
from rsd_kernels.verify import reference

BACKENDS = [pytest.param("torch", id="torch")] + kernel_backend_params("verify_tree")


def one_hot_logits(argmax_per_node, V):
    """Logits whose argmax at node i is ``argmax_per_node[i]`` (and a clear second best)."""
    T = len(argmax_per_node)
    x = torch.zeros(1, T, V)
    for i, a in enumerate(argmax_per_node):
        x[0, i, a] = 5.0
        x[0, i, (a + 1) % V] = 2.0
    return x


def later_sibling_case():
    """Root (argmax 7) has children 1 and 2, both token 7. Under node 1 the argmax is 3, but its
    child holds 4 (no match); under node 2 the argmax is 3 and its child (node 3) holds 3, whose
    argmax 9 is held by node 4. Longest path: 0 -> 2 -> 3 -> 4, next token = argmax at 4."""
    tokens = torch.tensor([[1, 7, 7, 3, 9, 4]])
    parents = torch.tensor([[-1, 0, 0, 2, 3, 1]], dtype=torch.int32)
    tl = one_hot_logits([7, 3, 3, 9, 11, 0], 16)
    return tl, tokens, parents


@pytest.mark.parametrize("backend", BACKENDS)
def test_later_sibling_with_deeper_match_wins(backend, device):
    tl, tokens, parents = later_sibling_case()
    r = verify_tree(tl.to(device), None, tokens.to(device), parents.to(device), mode="greedy", temperature=0.0,
                    backend=backend)
    assert r.path[0].tolist() == [0, 2, 3, 4]
    assert r.num_accepted.tolist() == [3] and r.next_token.tolist() == [11]


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_first_in_sampling_order(backend, device):
    # two equally deep matching paths: 0 -> 1 -> 4 and 0 -> 2 -> 3; node 1 comes first in
    # sampling order although its child (4) has the larger index than node 2's child (3).
    tokens = torch.tensor([[0, 5, 5, 6, 6, 8]])
    parents = torch.tensor([[-1, 0, 0, 2, 1, 2]], dtype=torch.int32)
    tl = one_hot_logits([5, 6, 6, 1, 2, 0], 10)
    r = verify_tree(tl.to(device), None, tokens.to(device), parents.to(device), mode="greedy", temperature=0.0,
                    backend=backend)
    assert r.path[0].tolist() == [0, 1, 4] and r.next_token.tolist() == [2]


def oracle(tl, tokens, parents, n):
    """Recursive: the longest matching path from the root, first child in order on ties."""
    best = tl.argmax(-1).tolist()
    tokens, parents = tokens.tolist(), parents.tolist()
    kids = {i: [j for j in range(1, n) if parents[j] == i] for i in range(n)}

    def longest(v):
        out = [v]
        for c in kids[v]:
            if tokens[c] == best[v]:
                sub = longest(c)
                if len(sub) + 1 > len(out):
                    out = [v] + sub
        return out

    path = longest(0)
    return path, best[path[-1]]


def random_matching_tree(B, T, V, gen):
    """Random trees with small token pools and logits whose argmax often equals a child's token."""
    parents = torch.full((B, T), -1, dtype=torch.int32)
    for i in range(1, T):
        parents[:, i] = torch.randint(max(0, i - 4), i, (B,), generator=gen).to(torch.int32)
    tokens = torch.randint(0, 3, (B, T), generator=gen)
    tl = torch.randn(B, T, V, generator=gen)
    tl[..., :3] += 4 * torch.rand(B, T, 3, generator=gen)  # argmax mostly among tokens 0..2
    nn = torch.randint(1, T + 1, (B,), generator=gen).to(torch.int32)
    nn[0] = T
    return tl, tokens, parents, nn


def _max_depth(parents, nn):
    return max(len(DraftTree(parents.new_zeros(parents.shape).long(), parents, nn).path_to(b, i)) - 1
               for b in range(parents.shape[0]) for i in range(int(nn[b])))


@pytest.mark.parametrize("T", [1, 2, 7, 16, 40])
def test_reference_matches_recursive_oracle(T):
    gen = torch.Generator().manual_seed(T)
    for trial in range(6):
        B, V = 5, [8, 300, 1000][trial % 3]
        tl, tokens, parents, nn = random_matching_tree(B, T, V, gen)
        md = _max_depth(parents, nn)
        path, nacc, nxt = reference.verify(tl, None, tokens, parents, nn, "greedy", 1.0, md)
        for b in range(B):
            want, want_next = oracle(tl[b], tokens[b], parents[b], int(nn[b]))
            got = [i for i in path[b].tolist() if i >= 0]
            assert got == want and nacc[b] == len(want) - 1 and nxt[b] == want_next, (b, got, want)


@pytest.mark.parametrize("backend", kernel_backend_params("verify_tree"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_kernels_match_reference_on_trees_with_many_matches(backend, dtype, device):
    gen = torch.Generator().manual_seed(11)
    for B, T, V in [(4, 9, 40), (3, 23, 300)]:
        tl, tokens, parents, nn = random_matching_tree(B, T, V, gen)
        tl_d, tok_d, par_d = tl.to(dtype).to(device), tokens.to(device), parents.to(device)
        kw = dict(mode="greedy", temperature=0.0, num_nodes=nn.to(device))
        want = verify_tree(tl_d, None, tok_d, par_d, backend="torch", **kw)
        got = verify_tree(tl_d, None, tok_d, par_d, backend=backend, **kw)
        for a, b_, name in zip(got, want, ("path", "num_accepted", "next_token")):
            assert torch.equal(a.cpu(), b_.cpu()), f"{name}\n{a}\n{b_}"


@pytest.mark.parametrize("chunk", [2, 7, 256])
def test_argmax_last_is_torch_argmax(chunk):
    gen = torch.Generator().manual_seed(chunk)
    for V in (1, 5, 256, 300, 1024, 1031):
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            x = (torch.randn(3, 4, V, generator=gen) * 2).round().to(dtype)  # many ties
            x[0, 0] = float("-inf")
            assert torch.equal(reference.argmax_last(x, chunk), x.argmax(-1)), (V, dtype)
