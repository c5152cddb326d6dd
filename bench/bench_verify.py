"""Tree verification. Floor: the target and draft rows of the nodes the walk must visit
(the accepted path, root included) read once, ``2 * sum_b (num_accepted_b + 1) * V * bytes``
(greedy: target rows only); tested-but-rejected nodes cost a few scalars (traversal: a rejected
subtree also costs one pass over its parent's rows, not counted in the floor)."""
import pytest
import torch

from benchutil import DEVICE, ON_GPU, backend_params, run
from rsd_kernels import verify_tree

# (B, T, V); first the goal shapes of issue 21: a 31-node tree (budget 30) at B=1 over Llama 2's
# vocabulary, and B=64 over Llama 3's (bf16)
SHAPES = [(1, 31, 32000), (64, 31, 128256), (32, 16, 32000)] if ON_GPU else [(1, 31, 4096), (4, 16, 4096)]


def _inputs(B, T, V):
    gen = torch.Generator().manual_seed(0)
    parents = torch.full((B, T), -1, dtype=torch.int32)
    for i in range(1, T):
        parents[:, i] = torch.randint(max(0, i - 3), i, (B,), generator=gen).to(torch.int32)
    tokens = torch.randint(0, 4, (B, T), generator=gen)  # few distinct tokens: long accepted paths
    dt = torch.bfloat16 if ON_GPU else torch.float32
    dgen = torch.Generator(device=DEVICE).manual_seed(0)  # logits made on the device (B=64: 1 GB)
    tl_ = torch.randn(B, T, V, generator=dgen, device=DEVICE)
    tl_[..., :4] += 6.0  # the target likes the drafted tokens
    dl = tl_ + 0.3 * torch.randn(B, T, V, generator=dgen, device=DEVICE)
    return tl_.to(dt), dl.to(dt), tokens.to(DEVICE), parents.to(DEVICE)


def _distinct_siblings(tokens, parents):
    """Token = rank among its siblings (0, 1, 2: distinct, favoured by the target): a tree drawn
    without replacement, as ``mode="traversal"`` requires."""
    par = parents.long()
    idx = torch.arange(tokens.shape[1], device=tokens.device)
    earlier = (par[:, :, None] == par[:, None, :]) & (idx[None, None, :] < idx[None, :, None])
    return torch.where(idx[None, :] > 0, earlier.sum(-1), tokens)


@pytest.mark.parametrize("mode", ["rrs", "kseq", "greedy", "traversal"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}_T{}_V{}".format(*s))
@pytest.mark.parametrize("backend", backend_params("verify_tree"))
def test_verify_tree(benchmark, backend, shape, mode):
    B, T, V = shape
    tl_, dl, tokens, parents = _inputs(B, T, V)
    if mode == "traversal":
        tokens = _distinct_siblings(tokens, parents)
    kw = dict(mode=mode, validate=False, backend=backend)
    if mode != "greedy":
        kw["seed"] = 5
    res = verify_tree(tl_, dl, tokens, parents, **kw)
    rows = 1 if mode == "greedy" else 2
    nbytes = rows * float((res.num_accepted + 1).sum()) * V * tl_.element_size()
    fn = lambda: verify_tree(tl_, dl, tokens, parents, **kw)  # noqa: E731
    run(benchmark, fn, nbytes, rows=B, op="verify_tree", backend=backend, shape=str(shape), mode=mode,
        mean_accepted=float(res.num_accepted.float().mean()))
