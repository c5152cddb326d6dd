"""The machine's cost profile: what one block of speculative decoding costs, measured in seconds.

A :class:`CostProfile` holds, for one exact setting (the target and draft models -- config and
a fingerprint of their weights --, dtypes, device, CPU threads, attention path, batch size,
torch version and CPU), measured at first use:

* ``target_s[i]`` -- one verification forward of the target over ``target_n[i]`` new tokens
  (root + tree nodes, tree mask, logits of every row) after a cache of ``contexts[0]`` tokens;
  ``target_ctx_s`` the same at ``contexts[1]`` on a sparser set of n (``target_ctx_n``): the
  growth with the context is interpolated between the two;
* ``ar_s`` -- one target-only step (one token, one output row) at each of ``contexts``;
* ``draft_s[i]`` -- one draft forward over ``draft_w[i]`` tree nodes of one level (tree mask);
  the level-0 chain of a block (pending tokens + root) costs the same as a level of that width.

The curve is **not** assumed monotone (a CPU GEMM picks kernels by row count: a 12-token
forward can be cheaper than an 11-token one). :meth:`CostProfile.verify_rows` gives the padded
row count of a verification forward: the measured n' >= n with the least predicted time
(padding pays when that is at least :data:`PAD_GAIN` cheaper than n itself).

Measurement: after one untimed pass over every size, ``repeats`` rounds each time every size
once (interleaved, so a slow period of a shared machine hits all sizes alike); the statistic is
the per-size minimum (the best of the repeats: other work on the machine only ever adds time).
The target sizes stop growing at the **node cap**: two measured n in a row (from
:data:`MIN_CAP` on) with ``t(n) > MAX_COST_RATIO * t(1)`` end the sweep (no tree whose depth is
at most ``MAX_COST_RATIO - 1`` can pay for it), so a profile on a CPU stays cheap (seconds) and a
GPU profile reaches n = 64.

Cache: one JSON file per key under ``cache_dir("profiles")`` (:mod:`rsd.engine.cachedir`), named
by the SHA-256 of the key; the file repeats the key, and :func:`load_or_measure` uses it only if
the schema, the key and every number check out. A file that does not (truncated, edited,
another key) is rebuilt with a warning, never trusted. ``rebuild=True`` (``rsd profile
--rebuild``) measures again.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch

from .cachedir import atomic_write, cache_dir

SCHEMA = "rsd-profile/1"
TARGET_NS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64)
TARGET_CTX_NS = (1, 2, 4, 8, 16, 32, 64)
DRAFT_WS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
CONTEXTS = (128, 512)
REPEATS = 3
MAX_COST_RATIO = 8.0  # node cap: stop the target sweep where t(n) exceeds this many target steps
MIN_CAP = 16  # the sweep never stops before this many new tokens
PAD_GAIN = 0.03  # pad a verification forward only when that is at least 3% cheaper


def _interp(xs, ys, x):
    """Piecewise-linear interpolation on sorted ``xs``; linear extrapolation beyond the ends."""
    if len(xs) == 1:
        return ys[0] * x / xs[0] if x > xs[0] else ys[0]
    i = bisect.bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return ys[i]
    i = min(max(i, 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return max(y0 + (y1 - y0) * (x - x0) / (x1 - x0), min(ys) * 0.5)


@dataclass
class CostProfile:
    """Measured costs of one setting (see the module docstring). Times in seconds."""

    key: dict
    target_n: list
    target_s: list
    contexts: list
    target_ctx_n: list
    target_ctx_s: list
    ar_s: list
    draft_w: list
    draft_s: list
    measure_s: float = 0.0  # how long the measurement took
    created: float = field(default_factory=time.time)

    # ---- predictions ------------------------------------------------------------------
    @property
    def node_cap(self) -> int:
        """The largest tree (draft nodes) worth considering: the largest measured n, minus the root."""
        return max(1, self.target_n[-1] - 1)

    def _ctx_slope(self, n) -> float:
        """d t(n) / d context, interpolated over the sparse sizes measured at both contexts."""
        c0, c1 = self.contexts
        base = [_interp(self.target_n, self.target_s, m) for m in self.target_ctx_n]
        slopes = [max(t1 - t0, 0.0) / (c1 - c0) for t0, t1 in zip(base, self.target_ctx_s)]  # never cheaper
        return _interp(self.target_ctx_n, slopes, n) if n <= self.target_ctx_n[-1] else slopes[-1]

    def target_time(self, n: int, ctx: int | None = None) -> float:
        """Predicted verification forward over ``n`` rows after ``ctx`` cached tokens."""
        t = _interp(self.target_n, self.target_s, n)
        if ctx is not None:
            t += self._ctx_slope(n) * (ctx - self.contexts[0])
        return max(t, 1e-7)

    def ar_time(self, ctx: int | None = None) -> float:
        """Predicted target-only step after ``ctx`` cached tokens."""
        (c0, c1), (a0, a1) = self.contexts, self.ar_s
        t = a0 if ctx is None else a0 + max(a1 - a0, 0.0) * (ctx - c0) / (c1 - c0)
        return max(t, 1e-7)

    def draft_time(self, w: int) -> float:
        """Predicted draft forward over ``w`` tokens (one tree level, or the level-0 chain)."""
        return max(_interp(self.draft_w, self.draft_s, w), 1e-7)

    def verify_rows(self, n: int, ctx: int | None = None) -> int:
        """Rows to run a verification forward of ``n`` real rows with: ``n``, or a larger
        measured size that is predicted at least :data:`PAD_GAIN` cheaper (the cheapest such)."""
        own = self.target_time(n, ctx)
        best, best_t = n, own * (1.0 - PAD_GAIN)
        for m in self.target_n:
            if m > n:
                t = self.target_time(m, ctx)
                if t < best_t:
                    best, best_t = m, t
        return best

    # ---- (de)serialisation -------------------------------------------------------------
    def to_json(self) -> dict:
        return {"schema": SCHEMA, **asdict(self)}

    @classmethod
    def from_json(cls, d) -> "CostProfile":
        """Parse and check a stored profile; ``ValueError`` saying what is wrong otherwise."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} profile")
        names = ("key", "target_n", "target_s", "contexts", "target_ctx_n", "target_ctx_s", "ar_s", "draft_w",
                 "draft_s")
        missing = [k for k in names if k not in d]
        if missing:
            raise ValueError(f"profile lacks {missing}")
        p = cls(**{k: d[k] for k in names}, measure_s=float(d.get("measure_s", 0.0)),
                created=float(d.get("created", 0.0)))
        p.check()
        return p

    def check(self):
        """``ValueError`` unless every table is well formed (sorted positive sizes, finite positive times)."""
        if not isinstance(self.key, dict):
            raise ValueError("profile key must be a dict")
        for sizes, times, what in ((self.target_n, self.target_s, "target"), (self.target_ctx_n, self.target_ctx_s,
                                   "target at the second context"), (self.draft_w, self.draft_s, "draft")):
            if not isinstance(sizes, list) or not isinstance(times, list) or len(sizes) != len(times) or not sizes:
                raise ValueError(f"{what} table: sizes and times must be non-empty lists of one length")
            if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes) or sizes != sorted(set(sizes)):
                raise ValueError(f"{what} table: sizes must be increasing positive ints, got {sizes}")
            _check_times(times, what)
        if self.target_n[0] != 1:
            raise ValueError("target table must start at n = 1")
        if not set(self.target_ctx_n) <= set(self.target_n):
            raise ValueError("second-context sizes must be among the target sizes")
        if (not isinstance(self.contexts, list) or len(self.contexts) != 2
                or any(isinstance(c, bool) or not isinstance(c, int) for c in self.contexts)
                or not 0 <= self.contexts[0] < self.contexts[1]):
            raise ValueError(f"contexts must be two increasing ints, got {self.contexts}")
        if not isinstance(self.ar_s, list) or len(self.ar_s) != 2:
            raise ValueError("ar_s must hold two times")
        _check_times(self.ar_s, "ar")

    def table(self) -> str:
        """A printable table of the profile."""
        t1 = self.target_s[0]
        lines = [f"target forward after {self.contexts[0]} cached tokens (t(1) = {t1 * 1e3:.2f} ms); "
                 f"target-only step {self.ar_s[0] * 1e3:.2f} ms at {self.contexts[0]}, "
                 f"{self.ar_s[1] * 1e3:.2f} ms at {self.contexts[1]}",
                 f"{'n':>4s} {'ms':>9s} {'t(n)/t(1)':>9s} {'pad to':>6s} {'at ' + str(self.contexts[1]):>9s}"]
        ctx = dict(zip(self.target_ctx_n, self.target_ctx_s))
        for n, t in zip(self.target_n, self.target_s):
            pad = self.verify_rows(n)
            c = f"{ctx[n] * 1e3:9.2f}" if n in ctx else f"{'':9s}"
            lines.append(f"{n:4d} {t * 1e3:9.2f} {t / t1:9.2f} {pad if pad != n else '':>6} {c}")
        lines.append(f"draft forward over w nodes of one level (ms): " + ", ".join(
            f"{w}: {s * 1e3:.2f}" for w, s in zip(self.draft_w, self.draft_s)))
        lines.append(f"node cap {self.node_cap} (target sweep ends where t(n) > {MAX_COST_RATIO:g} t(1)); "
                     f"measured in {self.measure_s:.1f} s")
        return "\n".join(lines)

    def plot(self, path: str) -> str:
        """A PNG of the curves (target t(n)/t(1) with padding, draft t(w)/t_target(1)) at ``path``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t1 = self.target_s[0]
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        ax[0].plot(self.target_n, [t / t1 for t in self.target_s], "o-", label=f"context {self.contexts[0]}")
        ax[0].plot(self.target_ctx_n, [t / t1 for t in self.target_ctx_s], "s--", label=f"context {self.contexts[1]}")
        ax[0].plot(self.target_n, [self.target_time(self.verify_rows(n)) / t1 for n in self.target_n], ":",
                   label="with padding")
        ax[0].set_xlabel("new tokens n (root + draft nodes)")
        ax[0].set_ylabel("target forward / one-token forward")
        ax[0].set_xscale("log", base=2)
        ax[0].legend()
        ax[1].plot(self.draft_w, [s / t1 for s in self.draft_s], "o-")
        ax[1].set_xlabel("draft nodes in one level w")
        ax[1].set_ylabel("draft forward / target one-token forward")
        ax[1].set_xscale("log", base=2)
        fig.suptitle(f"cost profile: {self.key.get('target', {}).get('name', 'target')}, "
                     f"{self.key.get('device')}, {self.key.get('threads')} threads, batch {self.key.get('batch')}")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _check_times(times, what):
    for t in times:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"{what} table: times must be finite positive numbers, got {t!r}")


# ------------------------------------------------------------------------------ key
def model_fingerprint(model) -> dict:
    """What identifies a model's cost and behaviour: its class, config and a digest of its weights
    (per parameter and buffer: name, shape, dtype, a strided sample, and the float64 sum and sum of
    squares -- one pass over the weights, and any change of a weight changes it)."""
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    cfg_text = cfg.to_json_string(use_diff=False) if hasattr(cfg, "to_json_string") else repr(cfg)
    h.update(cfg_text.encode())
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            flat = t.detach().reshape(-1)
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            if flat.numel() == 0:
                continue
            if flat.is_floating_point():
                sums = torch.stack([flat.sum(dtype=torch.float64), flat.square().sum(dtype=torch.float64)])
            else:
                sums = flat.to(torch.float64).sum()[None]
            step = max(1, flat.numel() // 64)
            h.update(flat[::step][:64].double().cpu().numpy().tobytes())
            h.update(sums.cpu().numpy().tobytes())
    return {"class": type(model).__name__, "name": getattr(cfg, "_name_or_path", "") or type(model).__name__,
            "digest": h.hexdigest()[:24]}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_FINGERPRINTS: dict = {}


def _fingerprint_once(model) -> dict:
    """:func:`model_fingerprint`, computed once per model object in this process (a profile is
    looked up before every ``generate(method="auto")``; weights changed in place afterwards are not
    seen -- pass ``rebuild=True`` or a fresh model)."""
    hit = _FINGERPRINTS.get(id(model))
    if hit is None or hit[0]() is not model:
        import weakref

        hit = (weakref.ref(model), model_fingerprint(model))
        _FINGERPRINTS[id(model)] = hit
    return hit[1]


def profile_key(target, draft, *, batch: int = 1, threads: int | None = None, fresh: bool = True) -> dict:
    """The cache key of a profile: target and draft fingerprints, dtypes, device, attention path,
    threads, batch size, torch version and CPU. ``target``/``draft`` are :class:`ModelAdapter` s.
    ``fresh=False`` reuses a model's fingerprint computed earlier in this process."""
    fp = model_fingerprint if fresh else _fingerprint_once
    dev = torch.device(target.device)
    device = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu: {_cpu_name()}"
    return {"target": fp(target.model), "target_dtype": str(target.dtype).replace("torch.", ""),
            "draft": None if draft is None else fp(draft.model),
            "draft_dtype": None if draft is None else str(draft.dtype).replace("torch.", ""),
            "device": device, "device_type": dev.type,
            "threads": int(threads if threads is not None else torch.get_num_threads()),
            "attention": target.attention, "batch": int(batch), "torch": torch.__version__,
            "schema": SCHEMA}


def profile_path(key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return os.path.join(cache_dir("profiles"), f"{digest}.json")


# ------------------------------------------------------------------------------ measuring
def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class _Bench:
    """Forwards of one model after a cached context, for timing (one prompt or a batch): the loop's
    own calls (:meth:`ModelAdapter.forward` with a tree mask, :meth:`BatchModel.run`). The cache is
    filled once with ``ctx`` random tokens; a call at a shorter context crops to it first (the keys
    it overwrites are random anyway)."""

    def __init__(self, adapter, batch: int, ctx: int, room: int, eagle_width: int | None = None):
        from .batch_model import BatchModel

        self.ad, self.B = adapter, batch
        self.dev = adapter.device
        self.eagle_width = eagle_width  # EAGLE draft: feature inputs of its tree levels (hidden width)
        self.vocab = adapter.vocab_size
        self.gen = torch.Generator().manual_seed(0)
        prefix = self._tokens(ctx)
        if batch == 1:
            self.bm = None
            adapter.reset(ctx + room)
            adapter.forward_chain(prefix, logits_to_keep=1, **self._extra(ctx, full=True))
        else:
            self.bm = BatchModel(adapter, batch, ctx + room)
            self._run(prefix, 0, keep=1, full=True)

    def _tokens(self, n):
        return torch.randint(0, self.vocab, (self.B, n), generator=self.gen).to(self.dev)

    def _extra(self, n, full=False):
        if self.eagle_width is None:
            return {}
        width = self.ad.model.feature_width if full else self.eagle_width
        return {"features": torch.zeros(self.B, n, width, dtype=self.ad.dtype, device=self.dev)}

    def _run(self, toks, start, keep=0, full=False):
        from .batch_model import batch_mask

        B, n = toks.shape
        self.bm.cache.set_lengths([start] * B)
        lens = torch.full((B,), start, dtype=torch.long, device=self.dev)
        ar = torch.arange(n, device=self.dev)
        local = (ar[None, None, :] <= ar[None, :, None]).expand(B, n, n)
        allowed = batch_mask(lens, lens, local, torch.ones(B, n, dtype=torch.bool, device=self.dev), start + n)
        ws = lens[:, None] + ar[None, :]
        return self.bm.run(toks, ws, ws, allowed, [n] * B, logits_to_keep=keep, **self._extra(n, full))

    def _at(self, ctx):
        """Cache length ``ctx`` (the buffer was filled up to the longest context once)."""
        self.ad.cache.length = ctx

    def tree(self, n, ctx):
        """A forward over ``n`` new tokens under a tree mask after ``ctx`` tokens, every row's logits
        (the verification forward / a draft level)."""
        toks = self._tokens(n)

        @torch.no_grad()
        def call():
            if self.bm is not None:
                return self._run(toks, ctx)
            self._at(ctx)
            pos = torch.arange(ctx, ctx + n, device=self.dev)[None]
            allowed = torch.ones(1, n, ctx + n, dtype=torch.bool, device=self.dev)
            allowed[0, :, ctx:] = torch.ones(n, n, dtype=torch.bool, device=self.dev).tril()
            return self.ad.forward(toks, pos, allowed, **self._extra(n))
        return call

    def step(self, ctx):
        """A target-only step after ``ctx`` tokens: one token, one output row (no mask on the
        single-prompt path)."""
        toks = self._tokens(1)

        @torch.no_grad()
        def call():
            if self.bm is not None:
                return self._run(toks, ctx, keep=1)
            self._at(ctx)
            return self.ad.forward_chain(toks, logits_to_keep=1)
        return call


def _time(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def measure(target, draft, *, batch: int = 1, repeats: int = REPEATS, contexts=CONTEXTS, target_ns=TARGET_NS,
            draft_ws=DRAFT_WS, log=None) -> CostProfile:
    """Measure a :class:`CostProfile` for ``target``/``draft`` (:class:`ModelAdapter` s; ``draft``
    may be None). Resets both adapters' caches.

    One untimed pass over the target sizes at the first context in increasing n (it ends the
    sweep at the node cap), then ``repeats`` timed rounds, each running every kept measurement
    once -- target sizes at both contexts, target-only steps, draft widths -- so that a slow
    period of the machine hits them all alike; each entry is its best time over the rounds.
    """
    from .adapter import is_eagle

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    t_start = time.perf_counter()
    dev = target.device
    c0, c1 = (int(c) for c in contexts)
    room = max(target_ns) + 8
    if target.max_positions is not None:  # small models (tests): keep every forward inside the context
        c1 = min(c1, max(2, target.max_positions - room))
        c0 = min(c0, max(1, c1 // 4))
        room = min(room, target.max_positions - c1)
        target_ns = [n for n in target_ns if n <= room]
    with torch.no_grad():
        bench = _Bench(target, batch, c1, room)
        calls = {("ar", c0): bench.step(c0)}
        t1, over = None, 0
        for n in target_ns:  # untimed pass; ends at the node cap
            fn = bench.tree(n, c0)
            t = _time(fn, dev)
            calls[("t", n, c0)] = fn
            if n == 1:
                t1 = min(t, _time(fn, dev))
            over = over + 1 if t > MAX_COST_RATIO * t1 else 0
            if over >= 2 and n >= MIN_CAP:  # two sizes in a row (one slow call of a busy machine is no cap)
                break
        ns = sorted(k[1] for k in calls if k[0] == "t")
        ctx_ns = [n for n in TARGET_CTX_NS if n in ns]
        if ns[-1] not in ctx_ns:
            ctx_ns.append(ns[-1])
        calls[("ar", c1)] = bench.step(c1)
        calls.update({("t", n, c1): bench.tree(n, c1) for n in ctx_ns})
        if draft is not None:
            width = draft.model.config.hidden_size if is_eagle(draft.model) else None
            dbench = _Bench(draft, batch, c0, room, eagle_width=width)
            ws = [w for w in draft_ws if w <= ns[-1]] or [1]
            calls.update({("d", w): dbench.tree(w, c0) for w in ws})
        for fn in list(calls.values())[len(ns) + 1:]:  # the rest's untimed pass
            _time(fn, dev)
        best = {k: float("inf") for k in calls}
        for _ in range(repeats):
            for k, fn in calls.items():
                best[k] = min(best[k], _time(fn, dev))
    for m in (target, draft):
        if m is not None:
            m.reset()
    if draft is not None:
        draft_w = sorted(k[1] for k in best if k[0] == "d")
        draft_s = [best[("d", w)] for w in draft_w]
    else:
        draft_w, draft_s = [1], [1e-7]
    prof = CostProfile(key={}, target_n=ns, target_s=[best[("t", n, c0)] for n in ns], contexts=[c0, c1],
                       target_ctx_n=ctx_ns, target_ctx_s=[best[("t", n, c1)] for n in ctx_ns],
                       ar_s=[best[("ar", c0)], best[("ar", c1)]], draft_w=draft_w, draft_s=draft_s,
                       measure_s=time.perf_counter() - t_start)
    if log is not None:
        log(f"cost profile measured in {prof.measure_s:.1f} s")
    return prof


def load_or_measure(target, draft, *, batch: int = 1, rebuild: bool = False, cache: bool = True, log=None,
                    **measure_kw) -> CostProfile:
    """The cached profile of this setting, or a new measurement (then cached). A cached file that
    fails its checks is measured again with a warning (never trusted)."""
    key = profile_key(target, draft, batch=batch, fresh=rebuild)
    path = profile_path(key) if cache else None
    if path is not None and not rebuild and os.path.exists(path):
        try:
            return _read(path, key)
        except (OSError, ValueError, TypeError, json.JSONDecodeError) as exc:
            warnings.warn(f"cost profile {path} is unusable ({exc}); measuring it again", RuntimeWarning,
                          stacklevel=2)
    prof = measure(target, draft, batch=batch, log=log, **measure_kw)
    prof.key = key
    if path is not None:
        with atomic_write(path, "w") as f:
            json.dump(prof.to_json(), f, indent=1)
    return prof


def _read(path: str, key: dict) -> CostProfile:
    with open(path, encoding="utf-8") as f:
        prof = CostProfile.from_json(json.load(f))
    if prof.key != key:
        raise ValueError("its key differs from this setting's")
    return prof


def cached_profile(target, draft, *, batch: int = 1) -> CostProfile | None:
    """The cached profile of this setting if there is a usable one, else None (nothing measured)."""
    key = profile_key(target, draft, batch=batch, fresh=False)
    try:
        return _read(profile_path(key), key)
    except (OSError, ValueError, TypeError, json.JSONDecodeError):
        return None
