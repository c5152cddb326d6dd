import pytest
import torch

from rsd_kernels import DraftTree
from rsd_kernels.attention.reference import unpack_bitmask


def example():
    # row 0: root -> {1, 2}; 1 -> {3, 4}; row 1 ragged: chain of 3 then padding
    return DraftTree.from_lists([[5, 1, 2, 3, 4], [7, 8, 9]], [[-1, 0, 0, 1, 1], [-1, 0, 1]])


def test_derived_views():
    t = example()
    assert t.depth.tolist() == [[0, 1, 1, 2, 2], [0, 1, 2, 0, 0]]
    assert t.max_depth == 2
    assert t.num_nodes.tolist() == [5, 3] and t.budget.tolist() == [4, 2]
    assert t.children(0, 0) == [1, 2] and t.children(0, 1) == [3, 4] and t.children(0, 2) == []
    assert t.children(1, 0) == [1] and t.children(1, 1) == [2]
    assert t.first_child.tolist() == [[1, 3, -1, -1, -1], [1, 2, -1, -1, -1]]
    assert t.next_sibling.tolist() == [[-1, 2, -1, 4, -1], [-1, -1, -1, -1, -1]]
    assert t.path_to(0, 4) == [0, 1, 4]
    assert t.position_ids(10).tolist() == [[10, 11, 11, 12, 12], [10, 11, 12, 10, 10]]
    assert t.position_ids(torch.tensor([3, 7])).tolist()[1] == [7, 8, 9, 7, 7]
    # bitmask: bit j of row i set iff j is i or an ancestor of i
    assert t.ancestor_bitmask[0, :, 0].tolist() == [0b1, 0b11, 0b101, 0b1011, 0b10011]
    assert t.ancestor_bitmask[1, :3, 0].tolist() == [0b1, 0b11, 0b111]


def test_dense_mask_matches_paths_and_bitmask_roundtrip():
    g = torch.Generator().manual_seed(0)
    for T in (1, 5, 33, 70):
        parents = [[-1] + [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, T)] for _ in range(3)]
        tokens = [[0] * T for _ in range(3)]
        t = DraftTree.from_lists(tokens, parents)
        assert t.ancestor_bitmask.shape == (3, T, (T + 31) // 32)
        assert torch.equal(unpack_bitmask(t.ancestor_bitmask, T), t.dense_mask)
        for b in range(3):
            for i in range(T):
                path = set(t.path_to(b, i))
                assert set(t.dense_mask[b, i].nonzero().flatten().tolist()) == path
                assert int(t.depth[b, i]) == len(path) - 1


def test_attention_mask_4d():
    t = example()
    m = t.attention_mask_4d(2, 9)
    assert m.shape == (2, 1, 5, 9)
    allowed = m[0, 0] == 0
    # node 3 sees prefix (0, 1), root (2), node 1 (3) and itself (5)
    assert allowed[3].nonzero().flatten().tolist() == [0, 1, 2, 3, 5]
    with pytest.raises(ValueError, match="cache length"):
        t.attention_mask_4d(5, 9)


@pytest.mark.parametrize(
    "tokens,parents,num_nodes,err,match",
    [
        ([[1, 2]], [[0, 0]], None, ValueError, r"parents\[0, 0\] must be -1"),
        ([[1, 2, 3]], [[-1, 0, 2]], None, ValueError, "parent must come before its child"),
        ([[1, 2, 3]], [[-1, 0, -1]], None, ValueError, "only node 0 may be the root"),
        ([[1, 2, 3]], [[-1, 0, 5]], None, ValueError, "parent must come before"),
        ([[1, 2]], [[-1, 0]], [0], ValueError, "num_nodes must lie in"),
        ([[1, 2]], [[-1, 0]], [3], ValueError, "num_nodes must lie in"),
    ],
)
def test_invalid_trees(tokens, parents, num_nodes, err, match):
    tok = torch.tensor(tokens)
    par = torch.tensor(parents, dtype=torch.int32)
    n = None if num_nodes is None else torch.tensor(num_nodes, dtype=torch.int32)
    with pytest.raises(err, match=match):
        DraftTree(tok, par, n)


def test_padding_is_ignored_by_validation():
    tok = torch.tensor([[1, 2, 99]])
    par = torch.tensor([[-1, 0, 7]], dtype=torch.int32)  # node 2 is padding: anything goes
    t = DraftTree(tok, par, torch.tensor([2], dtype=torch.int32), vocab_size=10)
    assert t.max_depth == 1 and t.children(0, 0) == [1]


def test_bad_types_shapes_and_ranges():
    tok = torch.tensor([[1, 2]])
    par = torch.tensor([[-1, 0]], dtype=torch.int32)
    with pytest.raises(TypeError, match="tokens must have dtype int64"):
        DraftTree(tok.int(), par)
    with pytest.raises(TypeError, match="parents must have dtype int32"):
        DraftTree(tok, par.long())
    with pytest.raises(TypeError, match="tokens must be a torch.Tensor"):
        DraftTree([[1, 2]], par)
    with pytest.raises(ValueError, match="tokens must have 2 dimensions"):
        DraftTree(tok[0], par)
    with pytest.raises(ValueError, match="parents must have shape"):
        DraftTree(tok, torch.tensor([[-1, 0, 0]], dtype=torch.int32))
    with pytest.raises(ValueError, match="parents is on meta"):
        DraftTree(tok, par.to("meta"))
    with pytest.raises(ValueError, match=r"tokens\[0, 1\] = 2 is out of range for vocab_size=2"):
        DraftTree(tok, par, vocab_size=2)
    with pytest.raises(ValueError, match="out of range"):
        DraftTree(torch.tensor([[1, -3]]), par, vocab_size=10)
    with pytest.raises(ValueError, match="at most 1024 nodes"):
        DraftTree(torch.zeros(1, 1025, dtype=torch.int64), torch.full((1, 1025), -1, dtype=torch.int32))
