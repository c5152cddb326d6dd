"""Shared test set-up.

Without a CUDA device the Triton kernels run under the interpreter: ``TRITON_INTERPRET=1``
must be set before triton is imported, so it is set here, first.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The converted-model cache (rsd.engine.model_cache) of a test session: pytest's cache folder of this
# checkout rather than the user's (CI starts from an empty one: the first load converts, once); the
# tests of the cache itself point RSD_CACHE_DIR at their tmp_path.
os.environ.setdefault("RSD_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                    ".pytest_cache", "rsd-cache"))

from rsd_kernels import backends  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KERNEL_BACKENDS = ("triton", "cuda")


@pytest.fixture
def device():
    return DEVICE


def _skip_reason(backend, op):
    if backend in backends.available(op, DEVICE):
        return None
    try:
        backends.resolve(op, backend, DEVICE)
    except ValueError as exc:
        return str(exc)
    return None


def kernel_backend_params(op):
    """``pytest.param`` for each kernel backend, skipped with the reason when it cannot run here."""
    out = []
    for b in KERNEL_BACKENDS:
        why = _skip_reason(b, op)
        marks = [pytest.mark.skip(reason=why)] if why else []
        out.append(pytest.param(b, marks=marks, id=b))
    return out
