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
    """Why ``backend`` cannot run ``op`` here, or None. Only the absence of what the backend runs on
    skips (no CUDA device for "cuda"; no Triton target for "triton"): a backend that should run but
    cannot (an import error in a kernel module, a failed build) is not skipped, so its tests fail
    with the reason instead of vanishing."""
    if backend in backends.available(op, DEVICE):
        return None
    if backend == "triton" and backends.triton_runs_on(torch.device(DEVICE)):
        return None
    if (backend == "cuda" and torch.cuda.is_available() and torch.version.cuda is not None
            and not os.environ.get("RSD_KERNELS_DISABLE_CUDA")):
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
