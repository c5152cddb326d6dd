"""Argument checks shared by every public op: each error names the argument."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor(name, x, *, ndim=None, dtypes=None, device=None, shape=None):
    """Check that ``x`` is a tensor of the given rank, dtype, device and (partial) shape."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {names}; got {str(x.dtype).replace('torch.', '')}")
    if device is not None and x.device != torch.device(device):
        raise ValueError(f"{name} is on {x.device} but the other inputs are on {device}")
    if shape is not None:
        for i, (want, got) in enumerate(zip(shape, x.shape)):
            if want is not None and want != got:
                raise ValueError(f"{name} must have shape {_fmt(shape)}, got {tuple(x.shape)} (dim {i})")
    return x


def _fmt(shape):
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"


def finite_logits(name, logits, *, rows_mask=None):
    """Reject NaN, +inf, and rows whose logits are all -inf (only rows where ``rows_mask``)."""
    nan = torch.isnan(logits).any(dim=-1)
    pinf = torch.isposinf(logits).any(dim=-1)
    empty = ~torch.isfinite(logits).any(dim=-1) & ~nan & ~pinf
    for bad, what in ((nan, "contains NaN"), (pinf, "contains +inf"), (empty, "has no finite logit: no token has positive probability")):
        if rows_mask is not None:
            bad = bad & rows_mask
        if bad.any():
            idx = [int(i) for i in bad.nonzero()[0]]
            raise ValueError(f"{name} {what} (at row {idx})")


def temperature(value, *, allow_zero=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"temperature must be a float, got {type(value).__name__}")
    if value != value or value < 0 or value == float("inf"):
        raise ValueError(f"temperature must be finite and >= 0, got {value}")
    if value == 0 and not allow_zero:
        raise ValueError("temperature must be > 0 here (temperature 0 is greedy decoding)")
    return float(value)


def positive_int(name, value, *, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def noise_source(*, explicit: dict, seed, generator):
    """At most one of: explicit noise tensors (all of them), seed, generator."""
    given = [k for k, v in explicit.items() if v is not None]
    if given and len(given) != len(explicit):
        missing = [k for k in explicit if k not in given]
        raise ValueError(f"explicit noise needs all of {list(explicit)}; missing {missing}")
    n = bool(given) + (seed is not None) + (generator is not None)
    if n > 1:
        raise ValueError("give at most one noise source: explicit noise tensors, seed=, or generator=")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
