"""The user cache folder of ``rsd`` and atomic writes into it.

Everything the engine derives once and reuses across runs (a converted model, a measured cost
profile) lives under :func:`cache_dir`: ``$RSD_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/rsd-kernels``, else ``~/.cache/rsd-kernels``. Entries are written with
:func:`atomic_write` (a temporary file in the same folder, then ``os.replace``), so an
interrupted write never leaves a partial entry under the final name.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

ENV_VAR = "RSD_CACHE_DIR"


def cache_dir(*parts: str, create: bool = True) -> str:
    """The cache folder (joined with ``parts``), created unless ``create=False``."""
    root = os.environ.get(ENV_VAR)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "rsd-kernels")
    path = os.path.join(root, *parts)
    if create:
        os.makedirs(path, exist_ok=True)
    return path


@contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``
    (``os.replace``: atomic on POSIX), on an exception it is removed and ``path`` is untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
