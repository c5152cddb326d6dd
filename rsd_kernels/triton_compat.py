"""Work-around for the Triton 3.6 interpreter under NumPy >= 2.4 (CPU testing only).

The interpreter holds kernel scalars as 1-element arrays and converts them with
``int(array)``, which NumPy 2.4 rejects for arrays with ``ndim > 0``; every
``range(runtime_int)`` in a kernel then fails under ``TRITON_INTERPRET=1``. This module
re-patches ``tensor.__index__`` to convert with ``.item()``. It changes nothing in compiled
(GPU) execution and is a no-op when the interpreter's behaviour is already fine.
"""
from __future__ import annotations


def install() -> None:
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - triton without the interpreter
        return
    if getattr(interpreter, "_rsd_index_patch", False) or not hasattr(interpreter, "_patch_lang_tensor"):
        return
    original = interpreter._patch_lang_tensor

    def _patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = _patch_lang_tensor
    interpreter._rsd_index_patch = True


install()
