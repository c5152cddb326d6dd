"""The seed figure from an ``rsd eval`` results file.

Layout (SPEC section 6, ``shared/seeds/``): one row per (model, data set), four columns
(block efficiency, MBSU, token rate, accuracy), x = budget ("num. tokens at the target"),
one line per method in the seed's styles, each point the method's best configuration at
that budget by block efficiency (the other three columns show that same configuration).
Accuracy's y axis is the seed's 0.7..1.3, widened when a value falls outside (a value is never
clipped away). The token-rate column also shows
the peer baseline (Hugging Face assisted generation) where the results have it, as a grey
line, and the target-only autoregressive rate 1.0 as a thin reference line. The accuracy
column shows, as a grey dashed line, the accuracy of a second autoregressive pass with other
seeds (``ar_repeat``): how far from 1.0 an exact method can land by sampling noise alone.
Points whose run has a confidence interval (``block_efficiency_ci``, ``mbsu_ci``,
``token_rate_ci``: bootstrap over items, written by ``rsd eval``) carry it as an error bar in the
method's colour; results without them (older files) plot without bars. Results that hold runs of
more than one verifier (``rsd eval --verifier rrs,traversal``) get one line per method and
verifier: the first of :func:`verifiers_of` (traversal when present) in the method's style, the
others in the method's colour, thin and faint, with hollow markers.
A ``method="auto"`` row (``results["auto"]``: no budget, its trees chosen per block) is a black
dash-dotted horizontal line in every column.
"""
from __future__ import annotations

import json
import math
import os

from .metrics import CI_LEVEL

METHOD_STYLES = {  # method -> (label, matplotlib kwargs), the seed's legend
    "sd": ("SD", dict(color="tab:orange", linestyle=":", marker="x")),
    "spectr": ("SpecTr", dict(color="tab:red", linestyle="-.", marker="+", markersize=9)),
    "rsd-c": ("RSD-C (ours)", dict(color="tab:green", linestyle="--", marker="D", markersize=5)),
    "rsd-s": ("RSD-S (ours)", dict(color="tab:blue", linestyle="-", marker="o", markersize=5)),
}
PEER_STYLE = ("HF assisted (peer)", dict(color="tab:gray", linestyle=(0, (1, 1)), marker="s", markersize=4))
CI_STYLE = (f"{CI_LEVEL:.0%} CI (bootstrap over items)", dict(color="0.3", marker="|", markersize=9, linestyle="none"))
AUTO_STYLE = ("auto (tree chosen per block)", dict(color="black", linestyle=(0, (3, 1, 1, 1)), linewidth=1.0))
NOISE_STYLE = ("AR with other seeds (noise)", dict(color="0.55", linestyle=(0, (4, 2)), linewidth=0.9))
COLUMNS = (("block_efficiency", "block efficiency"), ("mbsu", "MBSU"), ("token_rate", "token rate"),
           ("accuracy", "accuracy"))
DATASET_LABELS = {"wmt": "WMT", "xsum": "XSum", "dolly": "Dolly"}


def load_results(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        raise ValueError(f"{path}: not an rsd eval results file (no 'runs' list)")
    return results


def run_verifier(run: dict) -> str:
    """The verifier of a results record (files written before verifiers were recorded: ``rrs``)."""
    return run.get("verifier") or "rrs"


def verifiers_of(results: dict) -> list[str]:
    """The verifiers of the method runs, traversal first."""
    vs = {run_verifier(r) for r in results["runs"] if r.get("method") in METHOD_STYLES}
    return sorted(vs, key=lambda v: (v != "traversal", v))


def best_points(results: dict, verifier: str | None = None) -> dict:
    """``{(model, dataset): {method: {budget: run}}}``, ``run`` the configuration with the highest
    block efficiency among the finished runs of that method and budget (of ``verifier`` only,
    when given)."""
    best: dict = {}
    for run in results["runs"]:
        if run.get("method") not in METHOD_STYLES or not _finite(run.get("block_efficiency")):
            continue
        if verifier is not None and run_verifier(run) != verifier:
            continue
        cell = best.setdefault((run["model"], run["dataset"]), {}).setdefault(run["method"], {})
        cur = cell.get(run["budget"])
        if cur is None or run["block_efficiency"] > cur["block_efficiency"]:
            cell[run["budget"]] = run
    return best


def peer_points(results: dict) -> dict:
    """``{(model, dataset): {budget: token_rate}}`` of the peer baseline runs that finished."""
    out: dict = {}
    for run in results.get("peer", []):
        if _finite(run.get("token_rate")):
            out.setdefault((run["model"], run["dataset"]), {})[run["budget"]] = run["token_rate"]
    return out


def noise_levels(results: dict) -> dict:
    """``{(model, dataset): accuracy of the repeated autoregressive pass}`` where recorded."""
    return {(r["model"], r["dataset"]): r["accuracy"] for r in results.get("ar", [])
            if r.get("method") == "ar_repeat" and _finite(r.get("accuracy"))}


def _faint(style: dict) -> dict:
    """A method's style for a second verifier: the same colour, thin, faint, hollow markers."""
    return dict(style, linewidth=0.9, alpha=0.55, markerfacecolor="none")


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def interval(run: dict, field: str):
    """``run[field + "_ci"]`` as ``(lo, hi)`` when it is two finite numbers, else None."""
    ci = run.get(field + "_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_finite(v) for v in ci):
        return tuple(ci)
    return None


def plot_results(results: dict | str, out_prefix: str, *, title: str | None = None) -> list[str]:
    """Draw the figure; writes ``out_prefix + ".png"`` and ``".pdf"`` and returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if isinstance(results, str):
        results = load_results(results)
    verifiers = verifiers_of(results)
    by_verifier = {v: best_points(results, v) for v in verifiers}
    row_keys = {key for bv in by_verifier.values() for key in bv}  # (model, data set)
    if not row_keys:
        raise ValueError("results hold no finished method runs to plot")
    peers = peer_points(results)
    noise = noise_levels(results)
    autos = {(a["model"], a["dataset"]): a for a in results.get("auto", [])}
    order = results.get("datasets_order") or list(DATASET_LABELS)
    rows = sorted(row_keys, key=lambda k: (k[0], order.index(k[1]) if k[1] in order else len(order), k[1]))
    budgets = sorted({b for bv in by_verifier.values() for cell in bv.values() for m in cell.values() for b in m})

    has_ci = False
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 2.3 * len(rows) + 0.9), squeeze=False)
    for r, key in enumerate(rows):
        model, dataset = key
        for c, (field, label) in enumerate(COLUMNS):
            ax = axes[r][c]
            for vi, v in reversed(list(enumerate(verifiers))):
                for method, (_, style) in METHOD_STYLES.items():
                    pts = sorted((b, run[field], interval(run, field))
                                 for b, run in by_verifier[v].get(key, {}).get(method, {}).items()
                                 if _finite(run.get(field)))
                    if pts and vi == 0:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1.3, **style)
                    elif pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], **_faint(style))
                    bars = [p for p in pts if p[2]] if vi == 0 else []
                    if bars:
                        below = [max(0.0, y - ci[0]) for _, y, ci in bars]
                        above = [max(0.0, ci[1] - y) for _, y, ci in bars]
                        ax.errorbar([b for b, _, _ in bars], [y for _, y, _ in bars], yerr=[below, above], fmt="none",
                                    ecolor=style["color"], elinewidth=0.8, capsize=2.5, alpha=0.75)
                        has_ci = True
            if key in autos and _finite(autos[key].get(field)):  # method="auto": one value, no budget
                ax.axhline(autos[key][field], **AUTO_STYLE[1])
            if field == "token_rate":
                ax.axhline(1.0, color="0.75", linewidth=0.8, zorder=0)
                pts = sorted(peers.get(key, {}).items())
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1.1, **PEER_STYLE[1])
            if field == "accuracy":
                if key in noise:
                    ax.axhline(noise[key], zorder=0, **NOISE_STYLE[1])
                vals = [run[field] for bv in by_verifier.values() for m in bv.get(key, {}).values()
                        for run in m.values() if _finite(run.get(field))]
                vals += [noise[key]] if key in noise else []
                # the seed's 0.7..1.3, widened (never clipped) when a value falls outside
                ax.set_ylim(min([0.7] + [v - 0.05 for v in vals]), max([1.3] + [v + 0.05 for v in vals]))
                if not vals:
                    ax.text(0.5, 0.5, "n/a: autoregressive score is 0", transform=ax.transAxes, ha="center",
                            va="center", fontsize=8, color="0.4")
            ax.set_xlim(budgets[0] - 1.5, budgets[-1] + 1.5)
            ax.set_xticks(budgets)
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize=8)
            if r == 0:
                ax.set_title(label, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{model}\non {DATASET_LABELS.get(dataset, dataset)}", fontsize=8)
    fig.supxlabel("num. tokens at the target", fontsize=10, y=0.045 if len(rows) > 2 else 0.08)
    handles = [Line2D([], [], label=lab, **sty) for lab, sty in METHOD_STYLES.values()]
    if len(verifiers) > 1:  # which line is which verifier
        verifier_style = dict(color="0.2", marker="o", markersize=4)
        handles.append(Line2D([], [], label=f"{verifiers[0]} verifier", linewidth=1.3, **verifier_style))
        handles += [Line2D([], [], label=f"{v} verifier", **_faint(verifier_style)) for v in verifiers[1:]]
    if peers:
        handles.append(Line2D([], [], label=PEER_STYLE[0], **PEER_STYLE[1]))
    if autos:
        handles.append(Line2D([], [], label=AUTO_STYLE[0], **AUTO_STYLE[1]))
    if noise:
        handles.append(Line2D([], [], label=NOISE_STYLE[0], **NOISE_STYLE[1]))
    if has_ci:
        handles.append(Line2D([], [], label=CI_STYLE[0], **CI_STYLE[1]))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.07 if len(rows) > 2 else 0.12, 1, 0.97 if title else 1))
    paths = []
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
    for ext in ("png", "pdf"):
        path = f"{out_prefix}.{ext}"
        fig.savefig(path, dpi=130 if ext == "png" else None)
        paths.append(path)
    plt.close(fig)
    return paths
