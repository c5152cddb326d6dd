"""Which tree a method uses: the methods the loop runs and :func:`resolve_config` (an explicit
configuration, or the method's documented default for a budget). ``"auto"`` has no fixed tree:
:mod:`rsd.engine.selector` chooses one (or target-only decoding) before every block."""
from __future__ import annotations

from rsd_kernels.methods import METHODS, TreeConfig, default_config, parse_config

ALL_METHODS = ("ar",) + METHODS  # the fixed methods
AUTO = "auto"
LOOP_METHODS = ALL_METHODS + (AUTO,)


def resolve_config(method: str, config=None, budget=None) -> TreeConfig | None:
    """The tree configuration of ``method``: ``config`` (a :class:`TreeConfig` or text such as
    ``"3x2"`` / ``"2,2,1"``), else :func:`rsd_kernels.default_config` for ``budget``.

    ``"auto"`` returns None (its trees are chosen per block; ``budget`` then caps their draft nodes).

    Raises ``ValueError`` for an unknown method, a missing budget, or a config whose budget
    differs from the one given.
    """
    if method not in LOOP_METHODS:
        raise ValueError(f"method must be one of {LOOP_METHODS}, got {method!r}")
    if method == AUTO:
        if config is not None:
            raise ValueError("method 'auto' chooses its trees itself: it takes no tree config (a budget caps them)")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budget must be a positive int (the node cap of 'auto'), got {budget!r}")
        return None
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
