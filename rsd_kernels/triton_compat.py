"""Work-arounds for the Triton 3.6 interpreter (``TRITON_INTERPRET=1``, CPU testing only).

1. NumPy >= 2.4: the interpreter holds kernel scalars as 1-element arrays and converts them
   with ``int(array)``, which NumPy 2.4 rejects for arrays with ``ndim > 0``; every
   ``range(runtime_int)`` in a kernel then fails. ``tensor.__index__`` is re-patched to
   convert the single element.
2. Speed: every device-function call re-patches all of ``triton.language`` (about 3 ms per
   call, and never undone). Inside a running grid, the language modules a device
   function's module sees are now patched once per grid (per module) instead of per call.
   This keeps the kernels' helper functions affordable in the interpreter tests.
3. Speed: ``tl.philox`` runs its 10 rounds as about 100 interpreted operations (~20 ms per
   call). Its round function ``philox_impl`` on uint32 words runs as one NumPy computation
   instead (the same Philox4x32; ``FAST_PHILOX = False`` turns it off, and
   ``tests/test_noise.py`` checks Triton's own implementation against it).
4. ``tl.fma`` on float32 is ``x * y + z`` with two roundings in the interpreter; it is made a
   true fused multiply-add (one rounding, as on the GPU): the float64 sum of the exact product,
   rounded to odd, then to float32 (correct, 53 >= 24 + 2). The noise contract's ``log32``
   depends on it (:mod:`rsd_kernels.noise`).

Nothing here touches compiled (GPU) execution. Installed on import by the kernel modules.
"""
from __future__ import annotations


def install() -> None:
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - triton without the interpreter
        return
    if getattr(interpreter, "_rsd_compat_installed", False):
        return
    interpreter._rsd_compat_installed = True

    if hasattr(interpreter, "_patch_lang_tensor"):
        original_patch = interpreter._patch_lang_tensor

        def _patch_lang_tensor(tensor, scope):
            original_patch(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

        interpreter._patch_lang_tensor = _patch_lang_tensor

    builder_cls = getattr(interpreter, "InterpreterBuilder", None)
    if builder_cls is not None and hasattr(builder_cls, "create_fma"):
        builder_cls.create_fma = _fused_fma(builder_cls.create_fma, interpreter.TensorHandle)

    grid_cls = getattr(interpreter, "GridExecutor", None)
    fn_cls = getattr(interpreter, "InterpretedFunction", None)
    if grid_cls is None or fn_cls is None or not hasattr(fn_cls, "rewrite"):
        return
    state = {"depth": 0, "patched": set()}
    import triton.language as tl
    grid_call, fn_call = grid_cls.__call__, fn_cls.__call__

    def run_grid(self, *args, **kwargs):
        state["depth"] += 1
        if state["depth"] == 1:
            state["patched"] = set()
        try:
            return grid_call(self, *args, **kwargs)
        finally:
            state["depth"] -= 1

    def call_device_function(self, *args, **kwargs):
        if state["depth"] == 0:
            return fn_call(self, *args, **kwargs)
        if FAST_PHILOX and self.fn.__name__ == "philox_impl" and self.fn.__module__ == "triton.language.random":
            fast = _philox_impl_numpy(tl, interpreter.TensorHandle, *args, **kwargs)
            if fast is not None:
                return fast
        key = id(self.fn.__globals__)
        if key not in state["patched"]:  # what the original call does, once per module and grid
            interpreter._patch_lang(self.fn)
            state["patched"].add(key)
        fn = self.rewrite()
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise interpreter.InterpreterError(repr(e)) from e

    grid_cls.__call__ = run_grid
    fn_cls.__call__ = call_device_function



FAST_PHILOX = True


def _philox_impl_numpy(tl, tensor_handle, c0, c1, c2, c3, k0, k1, n_rounds=10):
    """``triton.language.random.philox_impl`` on uint32 words, in NumPy (None: not that case)."""
    import numpy as np

    words = [c0, c1, c2, c3, k0, k1]
    if not all(isinstance(w, tl.tensor) and w.dtype == tl.uint32 for w in words):
        return None
    m32, s32 = np.uint64(0xFFFFFFFF), np.uint64(32)
    c = np.broadcast_arrays(*[np.asarray(w.handle.data).astype(np.uint64) for w in words[:4]])
    x0, x1, x2, x3 = (a.copy() for a in c)
    key0, key1 = (np.asarray(w.handle.data).astype(np.uint64) for w in words[4:])
    for _ in range(int(getattr(n_rounds, "value", n_rounds))):
        pb, pa = np.uint64(0xCD9E8D57) * x2, np.uint64(0xD2511F53) * x0
        x0, x1, x2, x3 = (pb >> s32) ^ x1 ^ key0, pb & m32, (pa >> s32) ^ x3 ^ key1, pa & m32
        key0, key1 = (key0 + np.uint64(0x9E3779B9)) & m32, (key1 + np.uint64(0xBB67AE85)) & m32
    shape = list(x0.shape)
    ty = tl.block_type(tl.uint32, shape) if shape else tl.uint32
    return tuple(tl.tensor(tensor_handle(np.asarray(x.astype(np.uint32)), tl.uint32), ty) for x in (x0, x1, x2, x3))


def _fused_fma(original, tensor_handle):
    import numpy as np

    def create_fma(self, x, y, z):
        if not (x.data.dtype == y.data.dtype == z.data.dtype == np.float32):
            return original(self, x, y, z)
        p = x.data.astype(np.float64) * y.data.astype(np.float64)  # exact
        c = np.broadcast_to(z.data.astype(np.float64), p.shape)
        s = np.asarray(p + c)
        bb = s - p
        err = (p - (s - bb)) + (c - bb)  # TwoSum: s + err == p + c exactly
        inexact_even = (err != 0) & ((s.view(np.int64) & 1) == 0)
        s = np.where(inexact_even, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)  # round to odd
        return tensor_handle(np.asarray(s.astype(np.float32)), z.dtype.scalar)

    return create_fma


install()
