"""Statistical exactness of every method (SPEC section 5), with negative controls.

Set-up: vocabulary 8, target and draft are random "table models" (next-token logits depend on
the last token only; the draft is the target's logits plus N(0, 1.2^2) noise, so they differ a
lot). For each method and configuration, N = 20000 independent rows draft and verify a block
from root token 0 (a second block where the first emitted only one token), and Pearson's
chi-square compares the first two emitted tokens with the target's law
p(x1 | 0) p(x2 | x1) (64 cells, cells with expected count < 5 pooled). Fixed seeds.
Pass: p-value > 1e-3. A negative control must give p-value < 1e-6 under the same test.
"""
import pytest
import torch

import rsd_kernels.verify.reference as ref
from rsd_kernels.methods import TreeConfig
from rsd_kernels.testing import TableModel, chi_square_pvalue, expected_pairs, first_two_tokens

N = 20000
PASS, CAUGHT = 1e-3, 1e-6


@pytest.fixture(scope="module")
def models():
    g = torch.Generator().manual_seed(0)
    target = TableModel.random(8, 1.5, g)
    draft = TableModel.random(8, 1.5, g, base=target, noise=1.2)
    return target, draft


CONFIGS = [
    TreeConfig("sd", (3,)),
    TreeConfig("spectr", (3, 2)),
    TreeConfig("spectr", (4, 1)),
    TreeConfig("rsd-c", (3, 1)),
    TreeConfig("rsd-c", (2, 2)),
    TreeConfig("rsd-s", (3, 2)),
    TreeConfig("rsd-s", (2, 3)),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_method_is_exact(models, cfg):
    target, draft = models
    pairs = first_two_tokens(cfg, target, draft, root=0, n=N, seed=1)
    assert chi_square_pvalue(pairs, expected_pairs(target, 0)) > PASS


@pytest.mark.parametrize("cfg", [TreeConfig("rsd-s", (3, 2)), TreeConfig("spectr", (2, 2)), TreeConfig("sd", (2,))],
                         ids=str)
def test_method_is_exact_with_warps(models, cfg):
    target, draft = models
    warps = dict(temperature=0.7, top_k=5, top_p=0.9)
    pairs = first_two_tokens(cfg, target, draft, root=0, n=N, seed=2, **warps)
    assert chi_square_pvalue(pairs, expected_pairs(target, 0, **warps)) > PASS


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_greedy_emits_the_targets_greedy_tokens(models, cfg):
    target, draft = models
    pairs = first_two_tokens(cfg, target, draft, root=0, n=16, seed=3, temperature=0)
    x1 = int(target.logits[0].argmax())
    assert pairs.tolist() == [[x1, int(target.logits[x1].argmax())]] * 16


@pytest.mark.parametrize("cfg", [TreeConfig("rsd-c", (3, 1)), TreeConfig("rsd-s", (3, 2))], ids=str)
def test_negative_control_rrs_without_removing_rejected_token(models, cfg, monkeypatch):
    target, draft = models
    monkeypatch.setattr(ref, "_reject_draft_token", lambda q, x_onehot: q)
    pairs = first_two_tokens(cfg, target, draft, root=0, n=N, seed=1)
    assert chi_square_pvalue(pairs, expected_pairs(target, 0)) < CAUGHT


@pytest.mark.parametrize("cfg", [TreeConfig("spectr", (3, 2)), TreeConfig("spectr", (4, 1))], ids=str)
def test_negative_control_spectr_without_rho(models, cfg, monkeypatch):
    target, draft = models
    monkeypatch.setattr(ref, "spectr_rho", lambda p, q, k: torch.ones_like(k, dtype=p.dtype))
    pairs = first_two_tokens(cfg, target, draft, root=0, n=N, seed=1)
    assert chi_square_pvalue(pairs, expected_pairs(target, 0)) < CAUGHT


def test_negative_control_kseq_on_a_without_replacement_tree(models, monkeypatch):
    """Verifying RSD-C's without-replacement tree with SpecTr's rule is wrong and must be caught."""
    target, draft = models
    from rsd_kernels import testing

    orig = testing.verify_tree

    def wrong_mode(*args, **kwargs):
        if kwargs.get("mode") == "rrs":
            kwargs["mode"] = "kseq"
        return orig(*args, **kwargs)

    monkeypatch.setattr(testing, "verify_tree", wrong_mode)
    pairs = first_two_tokens(TreeConfig("rsd-c", (4, 1)), target, draft, root=0, n=N, seed=1)
    assert chi_square_pvalue(pairs, expected_pairs(target, 0)) < CAUGHT
