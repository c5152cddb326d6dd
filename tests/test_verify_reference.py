"""Hand-computed cases for the reference verifier (SPEC sections 3 and 4)."""
import math

import pytest
import torch

import rsd_kernels as rk
from rsd_kernels.verify.reference import spectr_rho


def logits_of(p):
    p = torch.tensor(p, dtype=torch.float64)
    return torch.where(p > 0, p.log(), float("-inf"))


def one_node(p, q, children, us, gumbel=None, mode="rrs"):
    """Root with the given children (tokens); target/draft distributions at the root; leaves
    get a target distribution that makes their bonus token recognisable (token 0)."""
    T, V = 1 + len(children), len(p)
    tl = torch.stack([logits_of(p)] + [logits_of([1.0] + [0.0] * (V - 1))] * len(children))[None]
    dl = torch.stack([logits_of(q)] * T)[None]
    tokens = torch.tensor([[0] + children])
    parents = torch.tensor([[-1] + [0] * len(children)], dtype=torch.int32)
    u = torch.tensor([[0.5] + us], dtype=torch.float64)
    g = torch.zeros(1, V) if gumbel is None else torch.tensor([gumbel])
    return rk.verify_tree(tl, dl, tokens, parents, mode=mode, uniform=u, gumbel=g)


P = [0.5, 0.3, 0.2]
Q = [0.2, 0.5, 0.3]


def test_rrs_first_child_threshold():
    # child token 1: accept iff u * q(1) < p(1)  <=>  u < 0.6
    r = one_node(P, Q, [1], [0.59])
    assert r.num_accepted.item() == 1 and r.path[0].tolist() == [0, 1]
    r = one_node(P, Q, [1], [0.61])
    assert r.num_accepted.item() == 0 and r.path[0].tolist() == [0, -1]
    # rejected: residual max(p - q, 0) = [0.3, 0, 0] -> token 0 whatever the noise
    assert r.next_token.item() == 0


def test_rrs_second_child_uses_residual_and_reduced_q():
    # reject token 1 -> p2 = [1, 0, 0], q2 = [0.4, 0, 0.6]; child token 0: u*0.4 < 1 always
    r = one_node(P, Q, [1, 0], [0.9, 0.999])
    assert r.num_accepted.item() == 1 and r.path[0].tolist() == [0, 2]
    # child token 2: p2(2) = 0 -> always rejected; p3 = normalize(max(p2 - q2, 0)) = [1, 0, 0]
    r = one_node(P, Q, [1, 2], [0.9, 1e-6])
    assert r.num_accepted.item() == 0 and r.next_token.item() == 0


def test_rrs_second_child_threshold_exact():
    p, q = [0.4, 0.35, 0.25], [0.5, 0.2, 0.3]
    # child 1 = token 0: accept iff u < 0.8; reject -> p2 = [0, .15, 0]/.15 = [0, 1, 0]... use token 2 instead
    # child 1 = token 2 (q=0.3, p=0.25): accept iff u < 5/6; rejected -> p2 = max(p-q,0)/m = [0, .15, 0]/.15
    # q2 = [0.5, 0.2, 0]/0.7 ; child 2 = token 1: accept iff u * (0.2/0.7) < 1 -> always
    r = one_node(p, q, [2, 1], [0.84, 0.99])
    assert r.path[0].tolist() == [0, 2]
    r = one_node(p, q, [2, 1], [0.82, 0.99])
    assert r.path[0].tolist() == [0, 1]


def test_rrs_single_node_law_is_exact():
    """Enumerate every ordered pair of children (without replacement from q) and integrate the
    acceptance thresholds: the emitted token's law equals p exactly."""
    p = torch.tensor([0.45, 0.25, 0.2, 0.1], dtype=torch.float64)
    q = torch.tensor([0.1, 0.3, 0.4, 0.2], dtype=torch.float64)
    V = 4
    law = torch.zeros(V, dtype=torch.float64)
    for a in range(V):
        for b in range(V):
            if a == b:
                continue
            pr = q[a] * q[b] / (1 - q[a])
            acc1 = min(1.0, float(p[a] / q[a]))
            law[a] += pr * acc1
            p2 = torch.clamp(p - q, min=0)
            p2 = p2 / p2.sum()
            q2 = q.clone()
            q2[a] = 0
            q2 = q2 / q2.sum()
            acc2 = min(1.0, float(p2[b] / q2[b]))
            law[b] += pr * (1 - acc1) * acc2
            p3 = torch.clamp(p2 - q2, min=0)
            p3 = p3 / p3.sum() if p3.sum() > 0 else p2
            law += pr * (1 - acc1) * (1 - acc2) * p3
            # the implementation takes the same decisions at the thresholds
            for u1, u2 in ((acc1 * 0.999, 0.5), (min(acc1 * 1.001, 0.9999), max(acc2 * 0.999, 1e-9))):
                if u1 >= 1:
                    continue
                r = one_node(p.tolist(), q.tolist(), [a, b], [u1, u2])
                want = [0, 1] if u1 < acc1 else ([0, 2] if u2 < acc2 else [0, -1])
                assert r.path[0].tolist() == want
    assert torch.allclose(law, p, atol=1e-12)


def test_rho_star_known_value():
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    rho = spectr_rho(p, q, torch.tensor([2]))
    assert float(rho) == pytest.approx(1 + 1 / math.sqrt(2), abs=1e-9)
    # it solves 1 - (1 - beta)^k = rho * beta for random p, q, k
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 7, generator=g, dtype=torch.float64), -1)
    q = torch.softmax(torch.randn(5, 7, generator=g, dtype=torch.float64), -1)
    k = torch.tensor([1, 2, 3, 4, 8])
    rho = spectr_rho(p, q, k)
    beta = torch.minimum(q, p / rho[:, None]).sum(-1)
    assert float(rho[0]) == 1.0
    assert torch.allclose(1 - (1 - beta[1:]) ** k[1:], rho[1:] * beta[1:], atol=1e-9)
    assert bool((rho >= 1).all() and (rho <= k).all())


def test_kseq_with_one_child_is_sd():
    g = torch.Generator().manual_seed(1)
    tl = torch.randn(64, 4, 6, generator=g)
    dl = torch.randn(64, 4, 6, generator=g)
    tokens = torch.randint(0, 6, (64, 4), generator=g)
    parents = torch.tensor([[-1, 0, 1, 2]] * 64, dtype=torch.int32)
    a = rk.verify_tree(tl, dl, tokens, parents, mode="rrs", seed=3)
    b = rk.verify_tree(tl, dl, tokens, parents, mode="kseq", seed=3)
    assert torch.equal(a.path, b.path) and torch.equal(a.next_token, b.next_token)


def test_kseq_continues_from_all_children_with_the_accepted_token():
    # Root: two i.i.d. children, both token 1 (nodes 1, 2). Node 1 is rejected, node 2 accepted
    # with the same acceptance probability min(1, p/(rho q)). The next candidates are the children
    # of BOTH (node 3 under node 1, node 4 under node 2), tested in index order.
    V = 3
    p_root, q_root = [0.45, 0.45, 0.1], [0.1, 0.8, 0.1]
    rho = float(spectr_rho(torch.tensor([p_root], dtype=torch.float64), torch.tensor([q_root], dtype=torch.float64),
                           torch.tensor([2])))
    a = p_root[1] / (rho * q_root[1])
    assert a < 1
    tl = torch.zeros(1, 5, V, dtype=torch.float64)
    dl = torch.zeros(1, 5, V, dtype=torch.float64)
    tl[0, 0], dl[0, 0] = logits_of(p_root), logits_of(q_root)
    tl[0, 1:] = torch.tensor([0.0, 0.0, 5.0])  # after token 1 the target wants token 2
    dl[0, 1:] = torch.tensor([5.0, 0.0, 0.0])  # the draft wants token 0
    tokens = torch.tensor([[0, 1, 1, 0, 2]])
    parents = torch.tensor([[-1, 0, 0, 1, 2]], dtype=torch.int32)
    u = torch.tensor([[0.5, (1 + a) / 2, a / 2, 0.5, 0.5]], dtype=torch.float64)
    r = rk.verify_tree(tl, dl, tokens, parents, mode="kseq", uniform=u, gumbel=torch.zeros(1, V))
    # node 3 (token 0: p small, q large) is rejected; node 4 (token 2) is accepted
    assert r.num_accepted.item() == 2
    assert r.path[0].tolist() == [0, 2, 4]
    # with node 2 rejected as well the block ends at the root with a residual token (not 1)
    u[0, 2] = (1 + a) / 2
    r = rk.verify_tree(tl, dl, tokens, parents, mode="kseq", uniform=u, gumbel=torch.zeros(1, V))
    assert r.num_accepted.item() == 0 and r.next_token.item() in (0, 2)


def test_greedy_mode():
    tl = torch.tensor([[[0.0, 3.0, 1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 9.0], [0.0, 4.0, 0.0]]])
    tokens = torch.tensor([[0, 2, 1, 2]])
    parents = torch.tensor([[-1, 0, 0, 2]], dtype=torch.int32)
    r = rk.verify_tree(tl, None, tokens, parents, mode="greedy")
    assert r.path[0].tolist() == [0, 2, 3] and r.num_accepted.item() == 2 and r.next_token.item() == 1


def test_ragged_rows_and_padding_not_visited():
    tl = torch.randn(2, 4, 5)
    dl = torch.randn(2, 4, 5)
    tokens = torch.tensor([[0, 1, 2, 3], [0, 4, 4, 4]])
    parents = torch.tensor([[-1, 0, 1, 2], [-1, 0, 0, 0]], dtype=torch.int32)
    n = torch.tensor([4, 1], dtype=torch.int32)
    tl[1, 1:] = float("nan")  # padding content is never read
    r = rk.verify_tree(tl, dl, tokens, parents, num_nodes=n, seed=0)
    assert r.num_accepted[1].item() == 0 and r.path[1].tolist() == [0, -1, -1, -1]


def test_seed_equals_explicit_noise_and_generator_reproducible():
    tl, dl = torch.randn(4, 6, 9), torch.randn(4, 6, 9)
    tokens = torch.randint(0, 9, (4, 6))
    parents = torch.tensor([[-1, 0, 0, 1, 1, 2]] * 4, dtype=torch.int32)
    a = rk.verify_tree(tl, dl, tokens, parents, seed=9, offset=2)
    u, g = rk.noise.verify_noise(9, 2, 4, 6, 9)
    b = rk.verify_tree(tl, dl, tokens, parents, uniform=u, gumbel=g)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = rk.verify_tree(tl, dl, tokens, parents, generator=torch.Generator().manual_seed(1))
    d = rk.verify_tree(tl, dl, tokens, parents, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(c, d))


def test_verify_bad_input():
    tl, dl = torch.randn(1, 3, 5), torch.randn(1, 3, 5)
    tokens = torch.tensor([[0, 1, 2]])
    parents = torch.tensor([[-1, 0, 0]], dtype=torch.int32)
    with pytest.raises(ValueError, match="mode must be one of"):
        rk.verify_tree(tl, dl, tokens, parents, mode="beam")
    with pytest.raises(ValueError, match="temperature must be finite and >= 0"):
        rk.verify_tree(tl, dl, tokens, parents, temperature=-0.5)
    with pytest.raises(ValueError, match="use mode='greedy'"):
        rk.verify_tree(tl, dl, tokens, parents, temperature=0)
    with pytest.raises(TypeError, match="draft_logits is required"):
        rk.verify_tree(tl, None, tokens, parents)
    with pytest.raises(ValueError, match="draft_logits must have shape"):
        rk.verify_tree(tl, dl[:, :2], tokens, parents)
    bad = tl.clone()
    bad[0, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="target_logits contains NaN"):
        rk.verify_tree(bad, dl, tokens, parents)
    bad[0, 1, 3] = float("inf")
    with pytest.raises(ValueError, match=r"target_logits contains \+inf"):
        rk.verify_tree(bad, dl, tokens, parents)
    with pytest.raises(ValueError, match="out of range for vocab_size=5"):
        rk.verify_tree(tl, dl, torch.tensor([[0, 1, 7]]), parents)
    with pytest.raises(ValueError, match="a parent must come before its child"):
        rk.verify_tree(tl, dl, tokens, torch.tensor([[-1, 2, 0]], dtype=torch.int32))
    with pytest.raises(TypeError, match="tokens must have dtype int64"):
        rk.verify_tree(tl, dl, tokens.int(), parents)
    with pytest.raises(ValueError, match="uniform must have shape"):
        rk.verify_tree(tl, dl, tokens, parents, uniform=torch.rand(1, 2), gumbel=torch.zeros(1, 5))
    with pytest.raises(ValueError, match="explicit noise needs all of"):
        rk.verify_tree(tl, dl, tokens, parents, uniform=torch.rand(1, 3))
    with pytest.raises(ValueError, match="open interval"):
        rk.verify_tree(tl, dl, tokens, parents, uniform=torch.zeros(1, 3), gumbel=torch.zeros(1, 5))
    with pytest.raises(ValueError, match="backend='triton' cannot run here|backend='cuda' cannot run here"):
        rk.verify_tree(tl, dl, tokens, parents, backend="cuda")
