"""Which tree a method uses: the methods the loop runs and :func:`resolve_config` (an explicit
configuration, or the method's documented default for a budget)."""
from __future__ import annotations

from rsd_kernels.methods import METHODS, TreeConfig, default_config, parse_config

ALL_METHODS = ("ar",) + METHODS


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
