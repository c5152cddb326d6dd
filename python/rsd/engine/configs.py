"""Which tree a method uses and how it is verified: the methods the loop runs, :func:`resolve_config`
(an explicit configuration, or the method's documented default for a budget) and
:func:`resolve_verifier` (the verifier, the ``verify_tree`` mode and whether SpecTr's chains are merged).
``"auto"`` has no fixed tree: :mod:`rsd.engine.selector` chooses one (or target-only decoding) before
every block."""
from __future__ import annotations

from rsd_kernels.methods import METHODS, VERIFIERS, TreeConfig, default_config, parse_config, verify_mode

ALL_METHODS = ("ar",) + METHODS  # the fixed methods
AUTO = "auto"
LOOP_METHODS = ALL_METHODS + (AUTO,)
DEFAULT_VERIFIER = "rrs"


def resolve_verifier(config: TreeConfig | None, verifier: str | None = None) -> tuple[str, str | None, bool]:
    """``(verifier, verify_tree mode, merge SpecTr's chains)`` for ``config``'s trees.

    ``verifier``: ``"rrs"`` (token-level: RRS without replacement for SD, RSD-C, RSD-S; SpecTr's
    k-sequential selection on its i.i.d. chains) or ``"traversal"`` (Traversal Verification; SpecTr's
    chains are merged into a prefix tree first, which it verifies exactly); ``None``:
    :data:`DEFAULT_VERIFIER`. The mode is ``None`` for ``ar`` (no tree).
    """
    verifier = DEFAULT_VERIFIER if verifier is None else verifier
    if verifier not in VERIFIERS:
        raise ValueError(f"verifier must be one of {VERIFIERS}, got {verifier!r}")
    if config is None:
        return verifier, None, False
    merge = config.method == "spectr" and verifier == "traversal"
    return verifier, verify_mode(config, verifier, merged=merge), merge

# Budget limits (README "Decoding", budget limits). A block verifies budget + 1 tokens in one target
# forward but commits at most depth + 1 of them, and the default trees' depth is at most 6 (SD: the
# budget itself, one sequential draft call per token).
MAX_BUDGET = 255  # refused above: a tree of 256 nodes (root included) is the largest the Triton verify kernel takes
LARGE_BUDGET = 32  # above it `rsd generate` says what a block costs: rsd eval measures budgets 6-30


def check_budget(budget):
    """``ValueError`` naming the limit when ``budget`` (an int) exceeds :data:`MAX_BUDGET`."""
    if isinstance(budget, int) and not isinstance(budget, bool) and budget > MAX_BUDGET:
        raise ValueError(f"budget {budget} exceeds the limit of {MAX_BUDGET} draft tokens per block: trees of at most "
                         f"{MAX_BUDGET + 1} nodes (root included) run on every verification backend, and a block "
                         "commits at most depth + 1 tokens whatever the budget (depth <= 6 for the tree methods)")
    return budget


def budget_cost(config: TreeConfig | None) -> str | None:
    """One line saying what a block of ``config`` costs when its budget exceeds :data:`LARGE_BUDGET`
    (else ``None``): the target reads budget + 1 tokens per forward for at most depth + 1 new ones."""
    if config is None or config.budget <= LARGE_BUDGET:
        return None
    return (f"budget {config.budget} ({config}): each block feeds the target {config.budget + 1} tokens in one "
            f"forward, after {config.depth} sequential draft forwards, to commit at most {config.depth + 1} tokens; "
            f"budgets above {LARGE_BUDGET} lie outside the range rsd eval measures (6-30)")


def resolve_config(method: str, config=None, budget=None) -> TreeConfig | None:
    """The tree configuration of ``method``: ``config`` (a :class:`TreeConfig` or text such as
    ``"3x2"`` / ``"2,2,1"``), else :func:`rsd_kernels.default_config` for ``budget``.

    ``"auto"`` returns None (its trees are chosen per block; ``budget`` then caps their draft nodes).

    Raises ``ValueError`` for an unknown method, a missing budget, a config whose budget
    differs from the one given, or a budget above :data:`MAX_BUDGET`.
    """
    if method not in LOOP_METHODS:
        raise ValueError(f"method must be one of {LOOP_METHODS}, got {method!r}")
    if method == AUTO:
        if config is not None:
            raise ValueError("method 'auto' chooses its trees itself: it takes no tree config (a budget caps them)")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budget must be a positive int (the node cap of 'auto'), got {budget!r}")
        check_budget(budget)
        return None
    if method == "ar":
        if config is not None:
            raise ValueError("method 'ar' (target only) takes no tree config")
        return None
    if config is None:
        if budget is None:
            raise ValueError(f"method {method!r} needs a budget or an explicit config")
        return default_config(method, check_budget(budget))
    if isinstance(config, str):
        config = parse_config(method, config)
    if not isinstance(config, TreeConfig):
        raise TypeError(f"config must be a TreeConfig or a string, got {type(config).__name__}")
    if config.method != method:
        raise ValueError(f"config {config} is for method {config.method!r}, not {method!r}")
    if budget is not None and config.budget != budget:
        raise ValueError(f"config {config} has budget {config.budget}, not the requested budget {budget}")
    check_budget(config.budget)
    return config
