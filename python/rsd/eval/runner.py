"""The evaluation grid (SPEC section 6): methods x budgets x configurations x data sets.

For one target/draft pair and each data set, :func:`run_grid` runs

1. target-only autoregressive decoding (``ar``) on every prompt: the denominator of token rate
   and accuracy; and a second ``ar`` pass with other seeds (``ar_repeat``) whose accuracy
   against the first shows how large sampling noise is on that many prompts;
2. every selected configuration of SD, SpecTr, RSD-C and RSD-S at every budget
   (:func:`grid_configs`), under each verifier of ``verifiers`` (``rrs``: token-level, SpecTr's
   k-sequential selection; ``traversal``: Traversal Verification, SpecTr's chains merged; see
   :func:`rsd.engine.configs.resolve_verifier`), on the same prompts, seeds and sampling settings;
3. ``method="auto"`` (one more row, ``results["auto"]``): the tree of every block chosen from
   this machine's cost profile and the acceptance seen so far (:mod:`rsd.engine.selector`), with
   the trees it ran (``configs_used``); ``--no-auto`` skips it;
4. the peer baseline: Hugging Face ``generate(..., assistant_model=draft)`` (assisted
   generation) with ``num_assistant_tokens = budget`` (constant schedule), plus Hugging Face's
   own target-only ``generate`` as its reference (:mod:`rsd.eval.peer`).

Per configuration it records pooled block efficiency, MBSU (with the parameter ratio used),
token rate, task score and accuracy, and the wall-time split (prefill / draft / target /
verify); for block efficiency, MBSU and token rate also a 95% bootstrap confidence interval over
items (``*_ci``, :func:`rsd.eval.metrics.bootstrap_ci`) from the per-item counts it keeps.
Timing: token rate = (generated tokens / wall seconds including the prefill) over the
same for ``ar``; one warm-up generation per data set precedes the timed runs.

Results are one JSON file, rewritten atomically after every configuration; a rerun with the
same settings skips the configurations already recorded (resume). Item ``i`` of a data set is
decoded with Philox seed ``seed + i`` by every method.

Configuration cap (``configs=``), depth capped at ``max_depth`` (default 6) for every method
except SD (whose depth is its budget):

* ``"all"``: every configuration of :func:`rsd_kernels.methods.configs_for_budget`;
* ``"capped"`` (default): the same, except RSD-C keeps only non-increasing branching vectors
  ``b_1 >= b_2 >= ...`` (widest at the root, where the draft is least certain): 5, 4, 4, 6 and
  13 configurations at budgets 6, 10, 14, 21, 30 instead of 10, 20, 28, 44 and 79;
* ``"default"``: one configuration per method and budget, :func:`rsd_kernels.default_config`.

``max_configs=N`` then keeps at most N per (method, budget): those whose depth is closest to
:data:`rsd_kernels.methods.DEFAULT_DEPTH`, ties towards the wider first level (the
``default_config`` order, so N=1 is the default configuration when it is in the list).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

from rsd_kernels.methods import (DEFAULT_DEPTH, DEFAULT_MAX_DEPTH, METHODS, VERIFIERS, TreeConfig, configs_for_budget,
                                 default_config)

from ..engine.configs import DEFAULT_VERIFIER

from . import metrics as M
from .datasets import EvalSet, load_eval_set
from .plot import run_verifier

SCHEMA = "rsd-eval/1"
BUDGETS = (6, 10, 14, 21, 30)
DATASETS = ("wmt", "xsum", "dolly")
CONFIG_MODES = ("all", "capped", "default")


# ---------------------------------------------------------------- grid

def _default_order(c: TreeConfig):
    return (abs(c.depth - DEFAULT_DEPTH), -c.shape[0], c.shape)


def grid_configs(method: str, budget: int, *, max_depth: int = DEFAULT_MAX_DEPTH, mode: str = "capped",
                 max_configs: int | None = None) -> list[TreeConfig]:
    """The configurations of ``method`` run at ``budget`` (see the module docstring for the cap)."""
    if mode not in CONFIG_MODES:
        raise ValueError(f"configs must be one of {CONFIG_MODES}, got {mode!r}")
    if max_configs is not None and (isinstance(max_configs, bool) or not isinstance(max_configs, int)
                                    or max_configs < 1):
        raise ValueError(f"max_configs must be a positive int or None, got {max_configs!r}")
    if mode == "default":
        cands = [default_config(method, budget)]
    else:
        cands = configs_for_budget(method, budget, max_depth)
        if mode == "capped" and method == "rsd-c":
            cands = [c for c in cands if list(c.shape) == sorted(c.shape, reverse=True)]
    if max_configs is not None and len(cands) > max_configs:
        cands = sorted(cands, key=_default_order)[:max_configs]
    return sorted(cands, key=lambda c: c.shape)


# ---------------------------------------------------------------- settings and results file

@dataclass
class EvalSettings:
    target: str = "embedded"
    draft: str = "embedded"
    datasets: tuple = DATASETS
    methods: tuple = METHODS
    budgets: tuple = BUDGETS
    items: int | None = 8  # prompts per data set (None: all)
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    max_depth: int = DEFAULT_MAX_DEPTH
    configs: str = "capped"
    max_configs: int | None = None
    attention: str = "sdpa"
    backend: str = "auto"
    peer: bool = True
    auto: bool = True  # also run method="auto" (one more row)
    threads: int = 1
    param_ratio: float | None = None  # override of draft params / target params
    dtype: str = "float32"
    verifiers: tuple = (DEFAULT_VERIFIER,)  # each configuration runs under each verifier

    def __post_init__(self):
        self.datasets, self.methods, self.budgets = tuple(self.datasets), tuple(self.methods), tuple(self.budgets)
        self.verifiers = (self.verifiers,) if isinstance(self.verifiers, str) else tuple(self.verifiers)
        if not self.verifiers or any(v not in VERIFIERS for v in self.verifiers):
            raise ValueError(f"verifiers must be among {VERIFIERS}, got {self.verifiers}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"methods must be among {METHODS}, got {bad}")
        if not self.budgets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.budgets):
            raise ValueError(f"budgets must be positive ints, got {self.budgets}")
        if self.configs not in CONFIG_MODES:
            raise ValueError(f"configs must be one of {CONFIG_MODES}, got {self.configs!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if self.items is not None and (isinstance(self.items, bool) or not isinstance(self.items, int) or self.items < 1):
            raise ValueError(f"items must be a positive int or None, got {self.items!r}")
        if not self.datasets:
            raise ValueError("datasets is empty")

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the file it extends (not threads / peer).

        For a draft read from a weights file (``embedded``, ``embedded-eagle``, ``eagle:PATH``)
        it includes a digest of that file, so results of an older draft are never mixed with a
        new one's.
        """
        d = dataclasses.asdict(self)
        for k in ("threads", "peer", "auto", "methods", "budgets", "datasets", "configs", "max_configs", "max_depth",
                  "verifiers"):
            d.pop(k)
        digest = draft_weights_digest(self.draft)
        if digest is not None:
            d["draft_weights"] = digest
        return json.loads(json.dumps(d))


def draft_weights_digest(spec: str = "embedded") -> str | None:
    """First 16 hex digits of the SHA-256 of the weights file behind ``spec``
    (:func:`rsd.engine.models.draft_weights_path`); ``None`` for other specs or a missing file."""
    from ..engine.models import draft_weights_path

    path = draft_weights_path(spec)
    if path is None or not os.path.exists(path):
        return None
    st = os.stat(path)
    return _file_digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """Hashes ``path`` once per (size, mtime): the fingerprint is taken several times per run."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


QUICK = dict(items=2, budgets=(6, 10), max_new_tokens=8, configs="default")


def run_key(model, dataset, method, config, verifier="rrs") -> str:
    return f"{model}|{dataset}|{method}|{config}|{verifier}"


def load_or_new_results(path: str, settings: EvalSettings, *, overwrite: bool = False) -> dict:
    """The results file to extend: the existing one when its settings match, else a new one."""
    if path and os.path.exists(path) and not overwrite:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        if results.get("schema") != SCHEMA:
            raise ValueError(f"{path}: not an rsd eval results file (schema {results.get('schema')!r})")
        old = results.get("fingerprint")
        if old != settings.fingerprint():
            diff = sorted(k for k in set(old or {}) | set(settings.fingerprint())
                          if (old or {}).get(k) != settings.fingerprint().get(k))
            raise ValueError(f"{path} was produced with other settings (differing: {diff}); "
                             "use another --out or --overwrite")
        return results
    return {"schema": SCHEMA, "fingerprint": settings.fingerprint(), "settings": None, "models": None,
            "datasets": {}, "datasets_order": list(settings.datasets), "ar": [], "runs": [], "peer": [],
            "hf_ar": [], "auto": [], "timing": {}}


def save_results(results: dict, path: str) -> None:
    """Atomic rewrite (write a temporary file, then rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, allow_nan=True)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- prompts and models

def chat_prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` as one user turn with the generation prompt, through the
    tokenizer's chat template when it has one; else the raw text followed by a newline."""
    if getattr(tokenizer, "chat_template", None):
        s = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                          add_generation_prompt=True)
        return list(tokenizer(s, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text + "\n")["input_ids"])


def eos_ids(tokenizer, model) -> list[int]:
    ids = set()
    for v in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(model, "generation_config", None),
                                                                   "eos_token_id", None)):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(t) for t in v)
    return sorted(ids)


def count_params(model, *, read_per_call: bool = True) -> int:
    """Parameters of ``model``, each shared tensor once.

    With ``read_per_call`` (the count MBSU's ratio uses), an input embedding table that is not
    also an output projection (untied) is left out: a forward reads one row of it per token,
    not the table, whereas a tied embedding is read whole as the output head. This matters for
    drafts that borrow the target's 49152 x 576 embedding but have a small head of their own.
    """
    import torch

    params = {id(p): p for p in model.parameters()}
    if read_per_call:
        linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
        for m in model.modules():
            if isinstance(m, torch.nn.Embedding) and id(m.weight) not in linear_weights:
                params.pop(id(m.weight), None)
    return int(sum(p.numel() for p in params.values()))


def short_label(spec: str, label: str) -> str:
    if spec == "embedded":
        return "SmolLM2-135M-Instruct"
    return os.path.basename(os.path.normpath(spec)) or label


@dataclass
class Pair:
    target: object
    draft: object
    tokenizer: object
    target_label: str
    draft_label: str
    model: str  # short name used in the figure
    target_params: int
    draft_params: int
    eos: list = field(default_factory=list)
    target_params_total: int | None = None
    draft_params_total: int | None = None


def load_pair(settings: EvalSettings, log=print) -> Pair:
    from rsd.engine.models import load_draft, load_target

    tgt = load_target(settings.target, dtype=settings.dtype)
    drf = load_draft(settings.draft, tgt, dtype=settings.dtype, log=log)
    return Pair(tgt.model, drf.model, tgt.tokenizer, tgt.label, drf.label, short_label(settings.target, tgt.label),
                count_params(tgt.model), count_params(drf.model), eos_ids(tgt.tokenizer, tgt.model),
                count_params(tgt.model, read_per_call=False), count_params(drf.model, read_per_call=False))


# ---------------------------------------------------------------- one configuration over a data set

def _decode_set(pair: Pair, adapters, prompts, settings: EvalSettings, method, config, seed0, bar, verifier=None):
    from rsd.engine.generate import generate

    outs = []
    for i, ids in enumerate(prompts):
        r = generate(adapters[0], adapters[1], ids, method, config, temperature=settings.temperature,
                     top_k=settings.top_k, top_p=settings.top_p, max_new_tokens=settings.max_new_tokens,
                     seed=seed0 + i, eos_token_id=pair.eos, attention=settings.attention, backend=settings.backend,
                     verifier=verifier)
        outs.append(r)
        if bar is not None:
            bar.update(1)
    return outs


def summarize(outs, texts, evalset: EvalSet) -> dict:
    """Pooled counts, time split and task score of one method over a data set."""
    toks = [len(r.tokens) for r in outs]
    walls = [r.wall_s for r in outs]
    split = {k: sum(r.time_split()[k] for r in outs)
             for k in ("prefill_s", "draft_s", "target_s", "verify_s", "cache_s", "other_s")}
    wall = sum(walls)
    calls = [r.target_calls for r in outs]
    return {
        "items": len(outs), "tokens": sum(toks), "tokens_per_item": toks,
        "target_calls": sum(calls), "target_calls_per_item": calls, "draft_calls": sum(r.draft_calls for r in outs),
        "wall_s": wall, "wall_s_per_item": walls, "time_split": split,
        "tokens_per_s": M.tokens_per_second(sum(toks), wall) if wall > 0 else float("nan"),
        "stop_reasons": {s: sum(r.stop_reason == s for r in outs) for s in sorted({r.stop_reason for r in outs})},
        "score": M.task_score(evalset.metric, texts, [it.reference for it in evalset.items]),
        "metric": evalset.metric,
    }


def _nan_if_error(fn, *a, default=float("nan")):
    try:
        return fn(*a)
    except ValueError:
        return default


def confidence_intervals(s: dict, ar: dict, tau: float, mbsu: float) -> dict:
    """``block_efficiency_ci``, ``mbsu_ci`` (tau's interval times MBSU / tau, the same constant)
    and ``token_rate_ci`` of a run summarized as ``s`` (:func:`summarize`) against the ``ar``
    record; ``None`` where undefined or where ``ar`` (an older file) lacks per-item times."""
    tau_ci = _nan_if_error(M.block_efficiency_ci, s["tokens_per_item"], s["target_calls_per_item"], default=None)
    rate_ci = None
    if "wall_s_per_item" in ar:
        rate_ci = _nan_if_error(M.token_rate_ci, s["tokens_per_item"], s["wall_s_per_item"], ar["tokens_per_item"],
                                ar["wall_s_per_item"], default=None)
    scale = mbsu / tau if tau_ci and math.isfinite(mbsu) and tau > 0 else None
    return {"block_efficiency_ci": tau_ci, "mbsu_ci": [v * scale for v in tau_ci] if scale else None,
            "token_rate_ci": rate_ci}


# ---------------------------------------------------------------- the grid

def run_grid(settings: EvalSettings, out_path: str, *, pair: Pair | None = None, progress: bool = True,
             overwrite: bool = False, log=print) -> dict:
    """Run (or resume) the grid; returns the results dict, also saved at ``out_path``."""
    import torch

    from rsd.engine.adapter import ModelAdapter

    from .peer import hf_generate

    torch.set_num_threads(settings.threads)
    results = load_or_new_results(out_path, settings, overwrite=overwrite)
    if pair is None:
        pair = load_pair(settings, log=log)
    ratio = settings.param_ratio if settings.param_ratio is not None else M.param_ratio(pair.draft_params,
                                                                                       pair.target_params)
    results["settings"] = dataclasses.asdict(settings)
    results["models"] = {"model": pair.model, "target": pair.target_label, "draft": pair.draft_label,
                         "target_params": pair.target_params, "draft_params": pair.draft_params,
                         "target_params_total": pair.target_params_total, "draft_params_total": pair.draft_params_total,
                         "param_ratio": ratio, "param_ratio_source": "override" if settings.param_ratio is not None
                         else "parameters read per forward (untied input embeddings excluded), draft / target"}
    results["environment"] = _environment(settings)
    results["ci"] = {"kind": "percentile bootstrap over items", "level": M.CI_LEVEL, "resamples": M.CI_RESAMPLES,
                     "seed": M.CI_SEED}
    for name in settings.datasets:
        if name not in results["datasets_order"]:
            results["datasets_order"].append(name)
    done = {run_key(r["model"], r["dataset"], r["method"], r["config"], run_verifier(r)) for r in results["runs"]}
    done_ar = {(r["model"], r["dataset"], r["method"]) for r in results["ar"]}
    done_peer = {(r["model"], r["dataset"], r["budget"]) for r in results["peer"]}
    results.setdefault("auto", [])
    done_auto = {(r["model"], r["dataset"]) for r in results["auto"]}
    done_hf_ar = {(r["model"], r["dataset"]) for r in results["hf_ar"]}
    adapters = (ModelAdapter(pair.target, attention=settings.attention, kernel_backend=settings.backend),
                ModelAdapter(pair.draft, attention="sdpa", kernel_backend=settings.backend))

    plan = [(m, b, c, v) for m in settings.methods for b in settings.budgets
            for c in grid_configs(m, b, max_depth=settings.max_depth, mode=settings.configs,
                                  max_configs=settings.max_configs) for v in settings.verifiers]
    tqdm = _tqdm(progress)
    t_start = time.perf_counter()
    for name in settings.datasets:
        evalset = load_eval_set(name, limit=settings.items)
        prompts = [chat_prompt_ids(pair.tokenizer, it.prompt) for it in evalset.items]
        results["datasets"][name] = {"task": evalset.task, "metric": evalset.metric, "source": evalset.source,
                                     "items": len(evalset), "prompt_tokens": [len(p) for p in prompts]}
        refs = [it.reference for it in evalset.items]

        def texts(outs):
            return [pair.tokenizer.decode(r.tokens, skip_special_tokens=True).strip() for r in outs]

        # warm-up (untimed): one short generation of each kind
        warm = [("ar", None, None)] + ([(plan[-1][0], plan[-1][2], plan[-1][3])] if plan else [])
        for m, c, v in warm:
            _decode_set(pair, adapters, prompts[:1], dataclasses.replace(settings, max_new_tokens=4), m, c,
                        settings.seed, None, v)

        for kind, seed0 in (("ar", settings.seed), ("ar_repeat", settings.seed + 1_000_003)):
            if (pair.model, name, kind) in done_ar:
                continue
            bar = tqdm(total=len(prompts), desc=f"{name} {kind}", leave=False)
            outs = _decode_set(pair, adapters, prompts, settings, "ar", None, seed0, bar)
            bar.close()
            rec = {"model": pair.model, "dataset": name, "method": kind, "seed0": seed0,
                   **summarize(outs, texts(outs), evalset), "outputs": texts(outs)}
            results["ar"].append(rec)
            save_results(results, out_path)
        ar = next(r for r in results["ar"] if (r["model"], r["dataset"], r["method"]) == (pair.model, name, "ar"))
        rep = next(r for r in results["ar"] if (r["model"], r["dataset"], r["method"]) == (pair.model, name, "ar_repeat"))
        rep["accuracy"] = _nan_if_error(M.accuracy, rep["score"], ar["score"])
        rep["token_rate"] = _nan_if_error(M.token_rate, rep["tokens"], rep["wall_s"], ar["tokens"], ar["wall_s"])

        todo = [(m, b, c, v) for m, b, c, v in plan if run_key(pair.model, name, m, str(c), v) not in done]
        bar = tqdm(total=len(todo) * len(prompts), desc=f"{name} grid ({len(todo)} configs)")
        for method, budget, config, verifier in todo:
            bar.set_postfix_str(f"{config} {verifier}")
            outs = _decode_set(pair, adapters, prompts, settings, method, config, settings.seed, bar, verifier)
            outputs = texts(outs)
            s = summarize(outs, outputs, evalset)
            tau = _nan_if_error(M.block_efficiency, s["tokens_per_item"], s["target_calls_per_item"])
            mbsu = _nan_if_error(M.mbsu, tau, ratio, config.depth) if math.isfinite(tau) else float("nan")
            rec = {"model": pair.model, "dataset": name, "method": method, "config": str(config),
                   "verifier": verifier, "shape": list(config.shape), "budget": budget, "depth": config.depth,
                   "block_efficiency": tau, "mbsu": mbsu, **confidence_intervals(s, ar, tau, mbsu),
                   "param_ratio": ratio,
                   "token_rate": _nan_if_error(M.token_rate, s["tokens"], s["wall_s"], ar["tokens"], ar["wall_s"]),
                   "accuracy": _nan_if_error(M.accuracy, s["score"], ar["score"]),
                   "accepted_per_block": sum(sum(r.accepted_lengths) for r in outs) / max(1, s["target_calls"]),
                   **s, "outputs": outputs}
            results["runs"].append(rec)
            done.add(run_key(pair.model, name, method, str(config), verifier))
            save_results(results, out_path)
        bar.close()

        if settings.auto and (pair.model, name) not in done_auto:
            bar = tqdm(total=len(prompts), desc=f"{name} auto", leave=False)
            outs = _decode_set(pair, adapters, prompts, settings, "auto", None, settings.seed, bar)
            bar.close()
            results["auto"].append(auto_record(pair.model, name, outs, texts(outs), evalset, ar, ratio))
            save_results(results, out_path)

        if settings.peer:
            def finish(rec, reference=None):
                rec.update(model=pair.model, dataset=name)
                if rec.get("available"):
                    rec["score"] = M.task_score(evalset.metric, rec.pop("texts"), refs)
                    rec["accuracy"] = _nan_if_error(M.accuracy, rec["score"], ar["score"])
                    rec["token_rate"] = _nan_if_error(M.token_rate, rec["tokens"], rec["wall_s"], ar["tokens"],
                                                      ar["wall_s"])
                    if reference is not None and reference.get("available"):
                        rec["token_rate_vs_hf_ar"] = _nan_if_error(M.token_rate, rec["tokens"], rec["wall_s"],
                                                                   reference["tokens"], reference["wall_s"])
                else:
                    rec["token_rate"] = None
                return rec

            if (pair.model, name) not in done_hf_ar:
                results["hf_ar"].append(finish(hf_generate(pair, prompts, settings, assistant=False)))
                save_results(results, out_path)
            hf_ar = next(r for r in results["hf_ar"] if (r["model"], r["dataset"]) == (pair.model, name))
            for budget in settings.budgets:
                if (pair.model, name, budget) in done_peer:
                    continue
                rec = hf_generate(pair, prompts, settings, assistant=True, budget=budget)
                rec["budget"] = budget
                results["peer"].append(finish(rec, hf_ar))
                save_results(results, out_path)
                if not rec.get("available"):
                    log(f"peer baseline n/a on {name}: {rec['reason']}")
                    for b in settings.budgets:  # the reason does not depend on the budget
                        if b != budget and (pair.model, name, b) not in done_peer:
                            results["peer"].append({**rec, "budget": b})
                    save_results(results, out_path)
                    break
    results["timing"]["last_session_s"] = time.perf_counter() - t_start
    save_results(results, out_path)
    return results


def auto_record(model, dataset, outs, outputs, evalset, ar, ratio) -> dict:
    """The record of a method="auto" run over a data set: the grid's metrics (MBSU with the mean
    draft calls per target call as L) and the trees it ran, with how many blocks each."""
    from collections import Counter

    s = summarize(outs, outputs, evalset)
    tau = _nan_if_error(M.block_efficiency, s["tokens_per_item"], s["target_calls_per_item"])
    depth = s["draft_calls"] / max(1, s["target_calls"])
    mbsu = _nan_if_error(M.mbsu, tau, ratio, depth) if math.isfinite(tau) else float("nan")
    used = Counter("target only" if b.choice is None or b.choice.config is None else str(b.choice.config)
                   for r in outs for b in r.blocks)
    return {"model": model, "dataset": dataset, "method": "auto", "config": "auto", "budget": None,
            "block_efficiency": tau, "mbsu": mbsu, **confidence_intervals(s, ar, tau, mbsu), "param_ratio": ratio,
            "token_rate": _nan_if_error(M.token_rate, s["tokens"], s["wall_s"], ar["tokens"], ar["wall_s"]),
            "accuracy": _nan_if_error(M.accuracy, s["score"], ar["score"]),
            "configs_used": dict(used.most_common()), **s, "outputs": outputs}


def _environment(settings):
    import platform

    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "threads": settings.threads, "device": "cpu", "cpu_count": os.cpu_count()}


def _tqdm(enabled):
    if enabled:
        try:
            from tqdm.auto import tqdm

            return lambda **kw: tqdm(file=sys.stderr, dynamic_ncols=True, **kw)
        except ImportError:
            pass

    class _Null:
        def __init__(self, **kw):
            pass

        def update(self, n=1):
            pass

        def set_postfix_str(self, s):
            pass

        def close(self):
            pass

    return _Null
