"""Which tree a method uses and how it is verified: the methods the loop runs, :func:`resolve_config`
(an explicit configuration, or the method's documented default for a budget) and
:func:`resolve_verifier` (the verifier, the ``verify_tree`` mode and whether SpecTr's chains are merged)."""
from __future__ import annotations

from rsd_kernels.methods import METHODS, VERIFIERS, TreeConfig, default_config, parse_config, verify_mode

ALL_METHODS = ("ar",) + METHODS
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


def resolve_config(method: str, config=None, budget=None) -> TreeConfig | None:
    """The tree configuration of ``method``: ``config`` (a :class:`TreeConfig` or text such as
    ``"3x2"`` / ``"2,2,1"``), else :func:`rsd_kernels.default_config` for ``budget``.

    Raises ``ValueError`` for an unknown method, a missing budget, or a config whose budget
    differs from the one given.
    """
    if method not in ALL_METHODS:
        raise ValueError(f"method must be one of {ALL_METHODS}, got {method!r}")
    if method == "ar":
        if config is not None:
            raise ValueError("method 'ar' (target only) takes no tree config")
        return None
    if config is None:
        if budget is None:
            raise ValueError(f"method {method!r} needs a budget or an explicit config")
        return default_config(method, budget)
    if isinstance(config, str):
        config = parse_config(method, config)
    if not isinstance(config, TreeConfig):
        raise TypeError(f"config must be a TreeConfig or a string, got {type(config).__name__}")
    if config.method != method:
        raise ValueError(f"config {config} is for method {config.method!r}, not {method!r}")
    if budget is not None and config.budget != budget:
        raise ValueError(f"config {config} has budget {config.budget}, not the requested budget {budget}")
    return config
