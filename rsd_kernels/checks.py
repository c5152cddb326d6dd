"""Argument checks shared by every public op: each error names the argument."""
from __future__ import annotations

import math
import numbers
import operator

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
    """Reject NaN, +inf, and rows whose logits are all -inf (only rows where ``rows_mask``).

    One pass over the logits: a row's maximum is NaN iff the row holds a NaN, +inf iff it
    holds +inf and no NaN, and -inf iff no entry is finite (nor NaN nor +inf).
    """
    mx = logits.amax(dim=-1) if logits.shape[-1] else logits.new_full(logits.shape[:-1], float("-inf"))
    for bad, what in ((torch.isnan(mx), "contains NaN"), (torch.isposinf(mx), "contains +inf"),
                      (torch.isneginf(mx), "has no finite logit: no token has positive probability")):
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


def top_p(value):
    """``top_p`` of the nucleus warp: None (off) or a real number in (0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"top_p must be a float in (0, 1], got {value!r}")
    return value


def sampling(t, k, p):
    """Check temperature ``t``, top-k ``k`` and top-p ``p`` together, whatever the temperature (a
    warp that greedy decoding ignores is still refused when it is invalid); returns ``float(t)``."""
    t = temperature(t)
    if k is not None:
        positive_int("top_k", k)
    top_p(p)
    return t


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


def real_number(name, value, *, finite=True):
    """A Python/NumPy real number (not a bool, a string or a tensor), finite unless told."""
    if isinstance(value, (torch.SymFloat, torch.SymInt)):  # traced by torch.compile: checked when concrete
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def int_values(name, values, *, lo, hi):
    """A list/tuple of ints (Python, NumPy or one-element integer tensors; not bools or
    floats) in ``[lo, hi)``, as a list of Python ints. ``name`` is the list's name."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{name} must be a list of ints, got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        try:
            if isinstance(v, bool):
                raise TypeError
            iv = operator.index(v)
        except TypeError:
            raise TypeError(f"{name}[{i}] must be an int, got {type(v).__name__} {v!r}") from None
        if not lo <= iv < hi:
            raise ValueError(f"{name}[{i}] = {iv} is out of range [{lo}, {hi})")
        out.append(iv)
    return out


def token_ids(name, tokens, vocab_size):
    """Every entry of the integer tensor ``tokens`` lies in ``[0, vocab_size)``."""
    bad = (tokens < 0) | (tokens >= vocab_size)
    if bad.any():
        at = tuple(int(i) for i in bad.nonzero()[0])
        at = at[0] if len(at) == 1 else at
        raise ValueError(f"{name}[{at}] = {int(tokens[bad][0])} is out of range for vocab_size={vocab_size}")
