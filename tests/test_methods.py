import pytest
import torch

from rsd_kernels import DraftTree
from rsd_kernels.methods import TreeConfig, build_tree, configs_for_budget, default_config, parse_config


@pytest.mark.parametrize("budget", [6, 10, 14, 21, 30])
def test_every_enumerated_config_has_the_budget(budget):
    for m in ("sd", "spectr", "rsd-c", "rsd-s"):
        cfgs = configs_for_budget(m, budget)
        assert cfgs and all(c.budget == budget for c in cfgs)
        assert len(set(cfgs)) == len(cfgs)
        assert default_config(m, budget) in cfgs
        if m != "sd":
            assert all(c.depth <= 6 for c in cfgs)
    assert [c.shape for c in configs_for_budget("rsd-s", 6)] == [(2, 3), (3, 2), (6, 1)]
    assert TreeConfig("rsd-c", (2, 2, 1)).budget == 2 + 4 + 4


def test_rsd_c_enumeration_is_complete_for_a_small_budget():
    got = {c.shape for c in configs_for_budget("rsd-c", 4)}
    assert got == {(4,), (1, 3), (1, 1, 2), (1, 1, 1, 1), (2, 1)}


def test_parse_and_errors():
    assert parse_config("rsd-s", "3x2") == TreeConfig("rsd-s", (3, 2))
    assert parse_config("rsd-c", "2,2,1").budget == 10
    assert str(parse_config("spectr", "3x2")) == "spectr 3x2"
    with pytest.raises(ValueError, match="cannot parse"):
        parse_config("rsd-s", "3,2")
    with pytest.raises(ValueError, match="method must be one of"):
        parse_config("medusa", "3")
    with pytest.raises(ValueError, match="width of at least 2"):
        TreeConfig("spectr", (1, 4))
    with pytest.raises(ValueError, match="no spectr configuration has budget 1"):
        configs_for_budget("spectr", 1)
    with pytest.raises(ValueError, match="no rsd-s configuration has budget 1"):
        configs_for_budget("rsd-s", 1)
    with pytest.raises(ValueError, match="no rsd-c configuration has budget 5 with depth <= 0"):
        configs_for_budget("rsd-c", 5, max_depth=0)
    with pytest.raises(ValueError, match="budget must be a positive int"):
        configs_for_budget("sd", 0)


@pytest.mark.parametrize("cfg,nodes,depth", [
    (TreeConfig("sd", (4,)), 5, 4),
    (TreeConfig("spectr", (3, 2)), 7, 2),
    (TreeConfig("rsd-c", (3, 2)), 10, 2),
    (TreeConfig("rsd-s", (3, 3)), 10, 3),
])
def test_build_tree_shapes_and_calls(cfg, nodes, depth):
    V = 12
    g = torch.Generator().manual_seed(0)
    table = torch.randn(V, V, generator=g)
    calls = []

    def draft_fn(level, frontier, tokens, parents):
        calls.append((level, frontier.shape[1], tokens.shape[1]))
        DraftTree(tokens, parents)  # the partial tree handed to the draft is valid
        return table[tokens.gather(1, frontier.clamp(min=0))]

    out = build_tree(cfg, torch.tensor([1, 2, 3]), draft_fn, seed=5)
    t = out.tree
    assert t.tokens.shape == (3, nodes) and out.draft_calls == depth == len(calls)
    assert [c[0] for c in calls] == list(range(depth))
    assert t.max_depth == depth
    assert out.draft_logits.shape == (3, nodes, V)
    for b in range(3):
        for i in range(nodes):
            kids = t.children(b, i)
            if kids:  # expanded nodes carry their draft logits
                assert torch.equal(out.draft_logits[b, i], table[t.tokens[b, i]])
            if cfg.method in ("rsd-c", "rsd-s"):  # without replacement: siblings are distinct
                toks = [int(t.tokens[b, c]) for c in kids]
                assert len(set(toks)) == len(toks)
    if cfg.method == "rsd-c":
        assert [len(t.children(0, i)) for i in range(4)] == [3, 2, 2, 2]


def test_support_exhaustion_gives_ragged_rows():
    V = 6
    table = torch.full((V, V), float("-inf"))
    table[:, :2] = 0.0  # only 2 tokens possible
    table[3, :] = 0.0  # ...except after token 3

    def draft_fn(level, frontier, tokens, parents):
        return table[tokens.gather(1, frontier.clamp(min=0))]

    out = build_tree(TreeConfig("rsd-c", (4,)), torch.tensor([0, 3]), draft_fn, seed=1)
    assert out.tree.num_nodes.tolist() == [3, 5]
    assert sorted(out.tree.tokens[0, 1:3].tolist()) == [0, 1]
