"""The figure renders from a small hand-made results file, best configuration per point."""
import json

import pytest

from rsd.eval import plot as P


def _run(dataset, method, config, budget, tau, rate=1.0):
    return dict(model="m", dataset=dataset, method=method, config=config, budget=budget, depth=2,
                block_efficiency=tau, mbsu=tau / 1.1, token_rate=rate, accuracy=1.0)


RESULTS = {"runs": [
    _run("wmt", "sd", "sd 6", 6, 1.8, 0.9), _run("wmt", "sd", "sd 10", 10, 1.9, 0.7),
    _run("wmt", "spectr", "spectr 3x2", 6, 2.0), _run("wmt", "spectr", "spectr 2x3", 6, 2.1),
    _run("wmt", "spectr", "spectr 5x2", 10, 2.2),
    _run("wmt", "rsd-c", "rsd-c 2,2", 6, 2.2), _run("wmt", "rsd-c", "rsd-c 2,2,1", 10, 2.3),
    _run("wmt", "rsd-s", "rsd-s 3x2", 6, 2.4), _run("wmt", "rsd-s", "rsd-s 5x2", 10, 2.6),
    _run("xsum", "rsd-s", "rsd-s 3x2", 6, 2.5), _run("xsum", "sd", "sd 6", 6, 2.0),
    dict(model="m", dataset="xsum", method="rsd-c", config="rsd-c 6", budget=6, error="boom"),
], "ar": [dict(model="m", dataset="wmt", method="ar", score=20.0),
          dict(model="m", dataset="wmt", method="ar_repeat", score=19.0, accuracy=0.95)],
    "peer": [dict(model="m", dataset="wmt", budget=6, token_rate=0.8), dict(model="m", dataset="wmt", budget=10,
                                                                           token_rate=None, reason="n/a")]}


def test_best_points_pick_highest_block_efficiency():
    best = P.best_points(RESULTS)
    assert set(best) == {("m", "wmt"), ("m", "xsum")}
    assert best[("m", "wmt")]["spectr"][6]["config"] == "spectr 2x3"
    assert "rsd-c" not in best[("m", "xsum")]  # the failed run is skipped
    assert P.peer_points(RESULTS) == {("m", "wmt"): {6: 0.8}}
    assert P.noise_levels(RESULTS) == {("m", "wmt"): 0.95}


def test_plot_writes_png_and_pdf(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(RESULTS))
    out = P.plot_results(str(path), str(tmp_path / "fig" / "seed"))
    assert [p.rsplit(".", 1)[1] for p in out] == ["png", "pdf"]
    for p in out:
        with open(p, "rb") as f:
            head = f.read(8)
        assert head.startswith(b"\x89PNG" if p.endswith("png") else b"%PDF")


def test_seed_styles():
    assert P.METHOD_STYLES["sd"][1]["linestyle"] == ":" and P.METHOD_STYLES["sd"][1]["marker"] == "x"
    assert P.METHOD_STYLES["spectr"][1]["linestyle"] == "-." and P.METHOD_STYLES["spectr"][1]["marker"] == "+"
    assert P.METHOD_STYLES["rsd-c"][1]["linestyle"] == "--" and P.METHOD_STYLES["rsd-c"][1]["marker"] == "D"
    assert P.METHOD_STYLES["rsd-s"][1]["linestyle"] == "-" and P.METHOD_STYLES["rsd-s"][1]["marker"] == "o"


def test_plot_rejects_empty(tmp_path):
    with pytest.raises(ValueError, match="no finished"):
        P.plot_results({"runs": []}, str(tmp_path / "x"))


def test_plot_draws_intervals_where_runs_have_them(tmp_path, monkeypatch):
    """Runs with ``*_ci`` get error bars (block efficiency, MBSU, token rate; not accuracy);
    runs without (older files) plot without bars."""
    from matplotlib.axes import Axes

    with_ci = json.loads(json.dumps(RESULTS))
    for run in with_ci["runs"]:
        if run["dataset"] == "wmt" and run["method"] == "rsd-s":
            for f in ("block_efficiency", "mbsu", "token_rate"):
                run[f + "_ci"] = [run[f] - 0.1, run[f] + 0.2]
    with_ci["runs"][0]["block_efficiency_ci"] = None  # an interval that could not be computed
    assert P.interval(with_ci["runs"][8], "mbsu") == pytest.approx((2.6 / 1.1 - 0.1, 2.6 / 1.1 + 0.2))
    assert P.interval(with_ci["runs"][0], "block_efficiency") is None and P.interval(with_ci["runs"][0], "mbsu") is None
    assert P.interval({"mbsu_ci": [1.0, float("nan")]}, "mbsu") is None
    drawn = []
    real = Axes.errorbar
    monkeypatch.setattr(Axes, "errorbar", lambda ax, x, y, **kw: drawn.append((list(x), list(y), kw["yerr"]))
                        or real(ax, x, y, **kw))
    assert P.plot_results(with_ci, str(tmp_path / "ci"))
    assert len(drawn) == 3  # one per panel with intervals: RSD-S on WMT, budgets 6 and 10
    assert drawn[0][0] == [6, 10] and drawn[0][2] == [pytest.approx([0.1, 0.1]), pytest.approx([0.2, 0.2])]
    drawn.clear()
    assert P.plot_results(RESULTS, str(tmp_path / "no_ci")) and drawn == []


def test_two_verifiers_give_one_line_per_method_and_verifier(tmp_path, monkeypatch):
    """Runs recorded with verifiers: best points per verifier (a run without one is ``rrs``), the
    first verifier (traversal) in the method's style, the other faint and hollow, each once."""
    from matplotlib.axes import Axes

    runs = [dict(r) for r in RESULTS["runs"] if "error" not in r]  # older records: no verifier field
    trav = [dict(r, verifier="traversal", block_efficiency=r["block_efficiency"] + 0.1) for r in runs]
    both = dict(RESULTS, runs=runs + trav)
    assert P.verifiers_of(both) == ["traversal", "rrs"]
    assert P.best_points(both, "rrs")[("m", "wmt")]["rsd-s"][10]["block_efficiency"] == 2.6
    assert P.best_points(both, "traversal")[("m", "wmt")]["rsd-s"][10]["block_efficiency"] == pytest.approx(2.7)
    lines = []
    real = Axes.plot

    def record(self, x, y, *a, **kw):
        lines.append((kw.get("color"), kw.get("alpha"), kw.get("markerfacecolor"), tuple(y)))
        return real(self, x, y, *a, **kw)

    monkeypatch.setattr(Axes, "plot", record)
    P.plot_results(both, str(tmp_path / "fig"))
    rsd_s = [l for l in lines if l[0] == "tab:blue"]  # rsd-s lines; block efficiency on wmt below
    assert [l[1:3] for l in rsd_s if l[3] == (2.4, 2.6)] == [(0.55, "none")]  # rrs: faint, hollow, once
    assert [l[1:3] for l in rsd_s if l[3] == pytest.approx((2.5, 2.7))] == [(None, None)]  # traversal: its style
