"""Property-based fuzz of the public ops (issue 13): every call either works (and its result
satisfies the op's invariants) or raises ValueError/TypeError whose message names one of the
op's arguments. Any other exception, or an accidental message, fails.

Shapes (empty dims included), dtypes, non-contiguous views, NaN/inf logits, invalid trees,
out-of-range tokens and bad scalar arguments are drawn by hypothesis, derandomised (the same
examples on every run) and bounded so the file costs well under a minute in CI: the torch
backend gets more examples, the Triton backend (the interpreter on a CPU) a few per op.
"""
import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rsd_kernels as rk  # noqa: E402
from rsd_kernels import backends  # noqa: E402

FUZZ = dict(deadline=None, derandomize=True, database=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
TORCH_EXAMPLES = 150
TRITON_EXAMPLES = 40

HAS_TRITON = "triton" in backends.available("verify_tree", "cuda" if torch.cuda.is_available() else "cpu")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKEND_PARAMS = [pytest.param("torch", TORCH_EXAMPLES, id="torch"),
                  pytest.param("triton", TRITON_EXAMPLES, id="triton",
                               marks=pytest.mark.skipif(not HAS_TRITON, reason="no Triton backend here"))]

FLOATS = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
ANY_DTYPES = FLOATS + [torch.int64, torch.int32, torch.bool]


OUTCOMES = {}  # (op, "ok" or the error type) -> count, for a look at what the fuzz reached


def expect_named(fn, names, op="?"):
    """Run ``fn``; a ValueError/TypeError must name one of ``names``. Returns the result or None."""
    key = op
    try:
        out = fn()
        OUTCOMES[key, "ok"] = OUTCOMES.get((key, "ok"), 0) + 1
        return out
    except (ValueError, TypeError) as exc:
        OUTCOMES[key, type(exc).__name__] = OUTCOMES.get((key, type(exc).__name__), 0) + 1
        msg = str(exc)
        assert any(n in msg for n in names), f"{type(exc).__name__} names no argument of {sorted(names)}: {msg!r}"
        return None


def run_with(examples, body):
    """``body(data)`` under hypothesis with ``examples`` derandomised examples."""
    settings(max_examples=examples, **FUZZ)(given(st.data())(body))()


# ---------------------------------------------------------------- strategies
class Validity:
    """Which aspects of an example are valid: all, all but one (the k-th one asked about), or
    each at random. ``ok()`` is asked once per aspect; ``all_valid`` says whether all were."""

    def __init__(self, data):
        self.data = data
        self.kind = data.draw(st.sampled_from(["valid", "one", "one", "random"]), label="validity")
        self.k = data.draw(st.integers(0, 19), label="broken aspect") if self.kind == "one" else -1
        self.n = 0
        self.all_valid = True

    def __call__(self):
        i, self.n = self.n, self.n + 1
        good = (self.kind == "valid" or (self.kind == "one" and i != self.k)
                or (self.kind == "random" and self.data.draw(st.booleans())))
        self.all_valid = self.all_valid and good
        return good


def pick(data, good, bad, valid, label=None):
    """One of ``good``, or of ``bad`` when this aspect of the example is to be broken."""
    return data.draw(st.sampled_from(list(good) if valid else list(bad)), label=label)


def dtype_st(valid=False):
    return st.sampled_from(FLOATS if valid else FLOATS * 3 + ANY_DTYPES[len(FLOATS):])


def logits(data, shape, dtype, *, nonfinite=True):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 2**16))))
    if nonfinite and dtype.is_floating_point and x.numel() and data.draw(st.integers(0, 5)) == 0:
        flat = x.view(-1)
        i = data.draw(st.integers(0, flat.numel() - 1))
        flat[i] = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    if dtype.is_floating_point:
        x = x.to(dtype)
    else:
        x = (x * 3).to(dtype)
    if x.dim() >= 2 and data.draw(st.booleans()):  # the same values through a non-contiguous view
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    return x


def tree_lists(data, T, V, *, valid=True):
    """One row: tokens and parents (valid topological order unless told)."""
    if T == 0:
        return [], []
    if valid:
        parents = [-1] + [data.draw(st.integers(0, i - 1)) for i in range(1, T)]
        tokens = [data.draw(st.integers(0, max(V - 1, 0))) for _ in range(T)]
    else:
        parents = [data.draw(st.integers(-2, T + 1)) for _ in range(T)]
        tokens = [data.draw(st.integers(-2, V + 2)) for _ in range(T)]
    return tokens, parents


def scalar_st():
    return st.sampled_from([0.0, 0.5, 1.0, 2, -1.0, float("nan"), float("inf"), "x", None, True, [1.0]])


# ---------------------------------------------------------------- verify_tree
VERIFY_NAMES = {"target_logits", "draft_logits", "tokens", "parents", "num_nodes", "mode", "temperature", "top_k",
                "top_p", "uniform", "gumbel", "seed", "offset", "backend", "tree"}


def _equal_siblings(rows, num_nodes):
    """Whether a row's real nodes include two siblings with the same token."""
    for b, (tok, par) in enumerate(rows):
        n = len(tok) if num_nodes is None else int(num_nodes[b])
        seen = set()
        for j in range(1, min(n, len(tok))):
            if (par[j], tok[j]) in seen:
                return True
            seen.add((par[j], tok[j]))
    return False


def _verify_body(backend):
    def body(data):
        ok = Validity(data)
        B = data.draw(st.integers(1, 3), label="B")
        T = data.draw(st.integers(1, 6), label="T")
        V = data.draw(st.integers(1, 12), label="V")
        dtype = data.draw(dtype_st(ok()), label="dtype")
        rows = [tree_lists(data, T, V, valid=ok() or data.draw(st.booleans())) for _ in range(B)]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.int64)
        parents = torch.tensor([r[1] for r in rows], dtype=pick(data, [torch.int32], [torch.int64], ok()))
        num_nodes = None
        if data.draw(st.booleans()):
            good = ok()
            num_nodes = torch.tensor([data.draw(st.integers(1 if good else 0, T if good else T + 1)) for _ in range(B)],
                                     dtype=torch.int32)
        mode = pick(data, ["rrs", "kseq", "greedy", "traversal"], ["bogus", None], ok(), "mode")
        if mode == "traversal" and _equal_siblings(rows, num_nodes):
            ok.all_valid = False  # traversal refuses siblings holding one token (a ValueError naming the mode)
        Vt = pick(data, [V], [V + 1], ok())  # mismatched vocabularies
        tl = logits(data, (B, T, V), dtype, nonfinite=not ok())
        dl = None if (mode == "greedy" and data.draw(st.booleans())) else logits(data, (B, T, Vt), dtype, nonfinite=not ok())
        temperature = 0.0 if mode == "greedy" else pick(data, [0.7, 1.0, 1.3], [0.0, -1.0, "x"], ok())
        top_k = pick(data, [None, None, 1, 3], [0, 2.5], ok())
        top_p = pick(data, [None, None, 0.9], [1.5, "x"], ok())
        seed = pick(data, [0, 7, 2**40], [-1, 1.5], ok())

        def call():
            dev = lambda x: None if x is None else x.to(DEVICE)  # noqa: E731
            return rk.verify_tree(dev(tl), dev(dl), dev(tokens), dev(parents), num_nodes=dev(num_nodes), mode=mode,
                                  temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, backend=backend)

        res = expect_named(call, VERIFY_NAMES, "verify_tree")
        if res is not None and backend != "torch":  # the kernel agrees with the reference (same Philox streams)
            want = rk.verify_tree(tl, dl, tokens, parents, num_nodes=num_nodes, mode=mode, temperature=temperature,
                                  top_k=top_k, top_p=top_p, seed=seed, backend="torch")
            for x, y in zip(res, want):
                assert torch.equal(x.cpu(), y), f"{backend} differs from torch:\n{res}\n{want}"
        if res is not None:
            n = num_nodes if num_nodes is not None else torch.full((B,), T)
            for b in range(B):
                path = [int(i) for i in res.path[b] if i >= 0]
                assert path[0] == 0 and len(path) == int(res.num_accepted[b]) + 1
                assert all(0 < i < int(n[b]) and int(parents[b, i]) == path[k] for k, i in enumerate(path[1:]))
                assert 0 <= int(res.next_token[b]) < V
        assert res is not None or not ok.all_valid, "a valid verify_tree call failed"
    return body


@pytest.mark.parametrize("backend,examples", BACKEND_PARAMS)
def test_fuzz_verify_tree(backend, examples):
    run_with(examples, _verify_body(backend))


# ---------------------------------------------------------------- tree_attention
ATTN_NAMES = {"q", "k", "v", "tree", "prefix_lens", "scale", "backend", "Triton"}


def _attention_body(backend):
    def body(data):
        ok = Validity(data)
        B = data.draw(st.integers(1, 2), label="B")
        Hkv = data.draw(st.integers(1 if ok() else 0, 2), label="Hkv")
        Hq = Hkv * data.draw(st.integers(1, 2)) + pick(data, [0], [1], ok())
        T = data.draw(st.integers(1 if ok() else 0, 5), label="T")
        D = pick(data, [16, 32], [8, 0, 1], ok(), "D")
        S = T + data.draw(st.integers(0, 6))
        good = ok()
        dtype = data.draw(dtype_st(good), label="dtype")
        if good and backend == "triton" and dtype == torch.float64:  # no float64 Triton attention
            dtype = torch.float32
        q = logits(data, (B, Hq, T, D), dtype, nonfinite=False)
        k = logits(data, (B, Hkv, S, D), dtype, nonfinite=False)
        v = logits(data, (B, Hkv, S, D), pick(data, [dtype], [torch.float32, torch.int64], ok()), nonfinite=False)
        good = ok()
        if T >= 1 and (good or data.draw(st.booleans())):
            rows = [tree_lists(data, T if (b == 0 and good) else data.draw(st.integers(1, T)), 10) for b in range(B)]
            tree = expect_named(lambda: rk.DraftTree.from_lists([r[0] for r in rows], [r[1] for r in rows]),
                                {"tokens", "parents"}, "from_lists")
            if tree is None:
                return
        else:
            W = max((T + 31) // 32, 1)
            tree = torch.randint(-2**31, 2**31 - 1, (B, T, data.draw(st.sampled_from([W, W, W + 1]))), dtype=torch.int64)
            tree = tree.to(data.draw(st.sampled_from([torch.int32, torch.int32, torch.int64])))
        good = ok()
        prefix = data.draw(st.one_of(st.integers(0 if good else -1, S - T if good else S + 1), st.just("pl_tensor")))
        if prefix == "pl_tensor":
            prefix = torch.tensor([data.draw(st.integers(0 if good else -1, S - T if good else S)) for _ in range(B)])
        scale = pick(data, [None, None, 0.25, 1], ["x", float("nan"), True], ok())

        def call():
            dev = lambda x: x.to(DEVICE) if torch.is_tensor(x) else x  # noqa: E731
            tr = tree if isinstance(tree, rk.DraftTree) else dev(tree)
            return rk.tree_attention(dev(q), dev(k), dev(v), tr, dev(prefix), scale=scale, backend=backend)

        out = expect_named(call, ATTN_NAMES, "tree_attention")
        if out is not None:
            assert out.shape == q.shape and out.dtype == q.dtype
            if isinstance(tree, rk.DraftTree):  # every node sees at least its own key: finite rows
                assert torch.isfinite(out.float()).all()
        assert out is not None or not ok.all_valid, "a valid tree_attention call failed"
    return body


@pytest.mark.parametrize("backend,examples", BACKEND_PARAMS)
def test_fuzz_tree_attention(backend, examples):
    run_with(examples, _attention_body(backend))


# ---------------------------------------------------------------- sample_without_replacement
SAMPLE_NAMES = {"logits", "k", "temperature", "top_k", "top_p", "gumbel", "seed", "offset", "backend", "Triton"}


def _sample_body(backend):
    def body(data):
        ok = Validity(data)
        R = data.draw(st.integers(0, 3), label="R")
        V = data.draw(st.integers(1 if ok() else 0, 12), label="V")
        dtype = data.draw(dtype_st(ok()), label="dtype")
        x = logits(data, (R, V), dtype, nonfinite=not ok())
        if R and V and dtype.is_floating_point and data.draw(st.booleans()):
            x[0, : data.draw(st.integers(0, V - 1 if ok() else V))] = float("-inf")  # a smaller support
        kind = pick(data, ["int", "tensor"], ["bad"], ok())
        if kind == "int":
            kk = data.draw(st.integers(1, max(V, 1)) if ok() else st.integers(-1, V + 1))
        elif kind == "tensor":
            kk = torch.tensor([data.draw(st.integers(1, max(V, 1)) if ok() else st.integers(0, V + 1)) for _ in range(R)],
                              dtype=pick(data, [torch.int32, torch.int64], [torch.float32], ok()))
        else:
            kk = data.draw(st.sampled_from([1.5, True, "2", None]))
        temperature = pick(data, [1.0, 0.5, 0.0], [-1.0, float("nan"), "x"], ok())
        top_k = pick(data, [None, None, 2], [0, 1.5], ok())
        top_p = pick(data, [None, None, 0.8], [0.0, 2.0], ok())

        def call():
            kt = kk.to(DEVICE) if torch.is_tensor(kk) else kk
            return rk.sample_without_replacement(x.to(DEVICE), kt, temperature=temperature, top_k=top_k, top_p=top_p,
                                                 seed=3, backend=backend)

        res = expect_named(call, SAMPLE_NAMES, "sample_without_replacement")
        if res is not None:
            for r in range(R):
                n = int(res.num_sampled[r])
                toks = [int(t) for t in res.tokens[r, :n]]
                assert len(set(toks)) == n and all(0 <= t < V for t in toks)
                assert all(int(t) == -1 for t in res.tokens[r, n:])
        assert res is not None or not ok.all_valid, "a valid sample_without_replacement call failed"
    return body


@pytest.mark.parametrize("backend,examples", BACKEND_PARAMS)
def test_fuzz_sample_without_replacement(backend, examples):
    run_with(examples, _sample_body(backend))


# ---------------------------------------------------------------- stochastic_beam_step
BEAM_NAMES = {"logits", "phi", "G", "width", "temperature", "top_k", "top_p", "gumbel", "seed", "offset", "backend",
              "Triton"}


def _beam_body(backend):
    def body(data):
        ok = Validity(data)
        B = data.draw(st.integers(0, 2), label="B")
        N = data.draw(st.integers(1 if ok() else 0, 3), label="N")
        V = data.draw(st.integers(1 if ok() else 0, 8), label="V")
        dtype = data.draw(dtype_st(ok()), label="dtype")
        x = logits(data, (B, N, V), dtype, nonfinite=not ok())
        phi = -torch.rand(B, N, dtype=torch.float64) * 3
        if B and N > 1 and data.draw(st.booleans()):
            phi[:, -1] = float("-inf")  # an inactive beam
        phi = phi.to(pick(data, [torch.float32, torch.float64], [torch.int64], ok()))
        G = torch.randn(B, N) if ok() or data.draw(st.booleans()) else torch.randn(B, N + 1)
        width = data.draw(st.integers(1, max(N * V, 1))) if ok() else data.draw(st.sampled_from([1, 2, 5, 0, 100, 1.5]))
        temperature = pick(data, [1.0, 0.7], [0.0, -1.0], ok())

        def call():
            return rk.stochastic_beam_step(x.to(DEVICE), phi.to(DEVICE), G.to(DEVICE), width, temperature=temperature,
                                           seed=5, backend=backend)

        res = expect_named(call, BEAM_NAMES, "stochastic_beam_step")
        if res is not None:
            assert res.tokens.shape == (B, width) and res.parent.shape == (B, width)
            sel = res.parent >= 0
            assert ((res.tokens >= 0) == sel).all() and (res.tokens < V).all() and (res.parent < N).all()
        assert res is not None or not ok.all_valid, "a valid stochastic_beam_step call failed"
    return body


@pytest.mark.parametrize("backend,examples", BACKEND_PARAMS)
def test_fuzz_stochastic_beam_step(backend, examples):
    run_with(examples, _beam_body(backend))


# ---------------------------------------------------------------- DraftTree
TREE_NAMES = {"tokens", "parents", "num_nodes", "vocab_size"}
ELEMENT = st.one_of(st.integers(-3, 12), st.integers(-3, 12), st.integers(-3, 12), st.sampled_from([1.5, 2.0, True, None, "1"]),
                    st.sampled_from([2**40, -2**70]))


@settings(max_examples=150, **FUZZ)
@given(data=st.data())
def test_fuzz_draft_tree_from_lists(data):
    nested = data.draw(st.booleans())
    rows = data.draw(st.integers(0, 3)) if nested else 1
    tok, par = [], []
    for _ in range(rows):
        T = data.draw(st.integers(0, 5))
        if data.draw(st.integers(0, 3)):
            t, p = tree_lists(data, max(T, 1), 10, valid=data.draw(st.integers(0, 3)) > 0)
        else:
            t = data.draw(st.lists(ELEMENT, max_size=5))
            p = data.draw(st.lists(ELEMENT, max_size=5))
        tok.append(t)
        par.append(p)
    tokens, parents = (tok, par) if nested else (tok[0], par[0])
    if data.draw(st.integers(0, 10)) == 0:
        tokens = data.draw(st.sampled_from([5, "x", None, torch.tensor([1, 2])]))
    vocab = data.draw(st.sampled_from([None, None, 10, 3, 0, "x"]))
    tree = expect_named(lambda: rk.DraftTree.from_lists(tokens, parents, vocab_size=vocab), TREE_NAMES, "from_lists")
    if tree is not None:
        assert all(isinstance(v, int) and not isinstance(v, bool) for row in tok + par for v in row), "non-int accepted"
        assert tree.batch_size == len(tok) and (tree.depth >= 0).all()
        for b in range(tree.batch_size):
            n = int(tree.num_nodes[b])
            assert tree.tokens[b, :n].tolist() == [int(v) for v in tok[b]]
            assert tree.parents[b, :n].tolist() == [int(v) for v in par[b]]


@settings(max_examples=120, **FUZZ)
@given(data=st.data())
def test_fuzz_draft_tree_constructor(data):
    ok = Validity(data)
    B = data.draw(st.integers(1 if ok() else 0, 3))
    T = data.draw(st.integers(1 if ok() else 0, 5))
    good = ok()
    tok = torch.randint(0 if good else -2, 10 if good else 12, (B, T))
    tok = tok.to(pick(data, [torch.int64], [torch.int32, torch.float32], ok()))
    par = torch.tensor([tree_lists(data, T, 10, valid=ok() or data.draw(st.booleans()))[1] for _ in range(B)],
                       dtype=torch.int64).reshape(B, T)
    par = par.to(pick(data, [torch.int32], [torch.int64, torch.float32], ok()))
    if not ok() and data.draw(st.booleans()):
        par = par[:, :-1] if T else par.reshape(-1)
    nn = None
    if data.draw(st.booleans()):
        nn = torch.tensor([data.draw(st.integers(1, max(T, 1)) if ok() else st.integers(-1, T + 1)) for _ in range(B)],
                          dtype=torch.int32)
    vocab = pick(data, [None, 10], [5, 0, "x"], ok())
    tree = expect_named(lambda: rk.DraftTree(tok, par, nn, vocab_size=vocab), TREE_NAMES, "DraftTree")
    assert tree is not None or not ok.all_valid, "a valid DraftTree failed"
    if tree is not None:
        assert tree.ancestor_bitmask.shape == (B, T, (T + 31) // 32)
        assert (tree.depth <= torch.arange(T)).all()


# ---------------------------------------------------------------- build_tree
BUILD_NAMES = {"config", "root_tokens", "draft_fn", "temperature", "top_k", "top_p", "seed", "offset", "backend",
               "shape", "method", "width", "logits", "k"}
SHAPES = {"sd": [(1,), (3,), (0,)], "spectr": [(2, 2), (3, 1), (1, 2)], "rsd-c": [(2, 1), (1, 2, 2), (3,)],
          "rsd-s": [(2, 2), (3, 2), (2,)], "bogus": [(2,)]}


def _build_body(backend):
    def body(data):
        ok = Validity(data)
        method = pick(data, ["sd", "spectr", "rsd-c", "rsd-s"], ["bogus"], ok(), "method")
        shape = data.draw(st.sampled_from(SHAPES[method][:2] if ok() else SHAPES[method]), label="shape")
        cfg = expect_named(lambda: rk.TreeConfig(method, shape), BUILD_NAMES, "TreeConfig")
        if cfg is None:
            return
        B = data.draw(st.integers(1 if ok() else 0, 2))
        V = data.draw(st.integers(1, 9), label="V")
        root = torch.tensor([data.draw(st.integers(0, max(V - 1, 0)) if ok() else st.integers(-1, V)) for _ in range(B)],
                            dtype=torch.int64)
        root = root.to(pick(data, [torch.int64], [torch.float32], ok()))
        vary = pick(data, [False], [True], ok())
        bad_out = pick(data, [None], ["list", "int", "nan"], ok())
        gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))

        def draft_fn(level, nodes, tokens, parents):
            assert nodes.dim() == 2 and tokens.shape == parents.shape
            lg = torch.randn(nodes.shape[0], nodes.shape[1], V + (level if vary else 0), generator=gen)
            if bad_out == "list":
                return lg.tolist()
            if bad_out == "int":
                return lg.long()
            if bad_out == "nan" and lg.numel():
                lg.view(-1)[0] = float("nan")
            return lg.to(DEVICE)

        temperature = pick(data, [1.0, 0.8, 0.0], [-1.0, "x"], ok())
        res = expect_named(lambda: rk.build_tree(cfg, root.to(DEVICE), draft_fn, temperature=temperature, seed=1,
                                                 backend=backend), BUILD_NAMES, "build_tree")
        if res is not None:
            tree = res.tree
            assert tree.batch_size == B and res.draft_calls == cfg.depth
            assert int(tree.budget.max()) <= cfg.budget
            assert res.draft_logits.shape[:2] == tree.tokens.shape
            assert torch.equal(tree.tokens[:, 0].cpu(), root)
            real = tree.tokens[tree.valid].cpu()
            assert ((real >= 0) & (real < V)).all(), "a token (the root included) outside the draft's vocabulary"
        assert res is not None or not ok.all_valid, "a valid build_tree call failed"
    return body


@pytest.mark.parametrize("backend,examples", BACKEND_PARAMS)
def test_fuzz_build_tree(backend, examples):
    run_with(examples, _build_body(backend))
