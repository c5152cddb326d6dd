"""The GPU check's table logic on the CPU: bench/report.py's goals from synthetic H200-like results,
a table from no results at all, and bench/gpu_check.sh's dry run (the build fails on a CPU; the
table must still come, with each step's status, the goals and the tiny e2e run)."""
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


report = _load("report")


def _bench(name, op, shape, backend, time_us, nbytes, mode="", rows=1, prefix=None, peak=4300.0):
    info = {"op": op, "shape": shape, "backend": backend, "mode": mode, "bytes": nbytes, "rows": rows,
            "time_s": time_us * 1e-6, "peak_gbps": peak, "device": "NVIDIA H200"}
    if prefix is not None:
        info["prefix"] = prefix
    return {"name": name, "stats": {"median": 2 * time_us * 1e-6}, "extra_info": info}


def _goal_lines(out):
    return [l for l in out.splitlines() if l.startswith(("tree attention", "verify_tree", "sample_without", "equal to"))]


def test_report_goals(tmp_path, capsys):
    gqa = "(1, 32, 8, 31, 128, 16415)"
    nb = 2 * 8 * 16415 * 128 * 2  # 67 MB: 15.6 us at 4.3 TB/s
    floor_us = nb / 4300e3
    b8 = "(8, 32, 32, 31, 128, 4127)"
    nb8 = 2 * 8 * 32 * 4127 * 128 * 2
    rows = [
        _bench("a", "tree_attention", gqa, "triton", floor_us / 0.65, nb, prefix=16384),  # 65% of the floor: met
        _bench("b", "tree_attention", gqa, "cuda", floor_us / 0.5, nb, prefix=16384),  # 50%: missed
        _bench("c", "tree_attention", gqa, "sdpa", 4 * floor_us / 0.85, nb, prefix=16384),
        _bench("d", "tree_attention", b8, "triton", nb8 / 4300e3 / 0.9, nb8, prefix=4096),  # 90%
        _bench("e", "tree_attention", "(8, 32, 8, 31, 128, 4127)", "triton", 1000.0, nb8 / 4, prefix=4096),  # 8%
        _bench("f", "tree_attention", "(1, 32, 32, 31, 128, 4127)", "triton", 1000.0, nb, prefix=4096),  # no goal
    ]
    rows += [_bench("t", "verify_tree", "(1, 31, 32000)", "triton", 30.0, 1e5, "traversal"),  # its own floor, 40 us
             _bench("t", "verify_tree", "(1, 31, 32000)", "cuda", 45.0, 1e5, "traversal")]
    for mode, t1, t64, c1 in (("rrs", 20.0, 70.0, 30.0), ("kseq", 50.0, 150.0, 100.0), ("greedy", 5.0, 20.0, 9.0)):
        rows += [_bench("v", "verify_tree", "(1, 31, 32000)", "triton", t1, 1e5, mode),
                 _bench("v", "verify_tree", "(64, 31, 128256)", "triton", t64, 1e8, mode),
                 _bench("v", "verify_tree", "(1, 31, 32000)", "cuda", c1, 1e5, mode),
                 _bench("v", "verify_tree", "(1, 31, 32000)", "torch", 400.0, 1e5, mode)]
    rows += [_bench("s", "sample_without_replacement", "(64, 32000, 4)", "triton", 5.0, 4.1e6, rows=64),
             _bench("s", "sample_without_replacement", "(64, 32000, 4)", "cuda", 9.0, 4.1e6, rows=64)]
    (tmp_path / "bench.json").write_text(json.dumps({"benchmarks": rows, "skipped": [], "errors": []}))
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.test_kernel_verify" name="test_verify[triton-rrs]"/>'
        '<testcase classname="tests.test_kernel_verify" name="test_verify[cuda-rrs]"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_cuda_backend" name="test_attention[64]"/>'
        '</testsuite></testsuites>')
    (tmp_path / "steps.tsv").write_text("build\tok\t95\tready\ntests\tFAILED (rc 1)\t80\t1 failed\n")
    assert report.main([str(tmp_path / "bench.json"), "--steps", str(tmp_path / "steps.tsv"),
                        "--tests", str(tmp_path / "tests.xml"), "--e2e", str(tmp_path / "none.json")]) == 0
    out = capsys.readouterr().out
    goals = {(l[:62].strip(), l[63:70].strip()): l.split()[-1] for l in _goal_lines(out)}
    assert goals[("tree attention >= 60% of copy bw, B=1 GQA prefix 16384", "triton")] == "met"
    assert goals[("tree attention >= 60% of copy bw, B=1 GQA prefix 16384", "cuda")] == "MISSED"
    assert goals[("tree attention >= 60% of copy bw, B=8", "triton")] == "MISSED"  # the 8% row
    assert goals[("tree attention >= 60% of copy bw, B=8", "cuda")] == "measured"  # "not measured"
    assert goals[("verify_tree rrs <= 25 us, B=1 T=31 V=32000", "triton")] == "met"
    assert goals[("verify_tree rrs <= 25 us, B=1 T=31 V=32000", "cuda")] == "MISSED"
    assert goals[("verify_tree rrs <= 60 us, B=64 T=31 V=128256 bf16", "triton")] == "MISSED"
    assert goals[("verify_tree kseq <= 3x rrs, same shapes", "triton")] == "met"  # 2.5x and 2.1x
    assert goals[("verify_tree kseq <= 3x rrs, same shapes", "cuda")] == "MISSED"  # 3.33x
    assert goals[("sample_without_replacement <= 6 us, 64x32000 k=4", "triton")] == "met"
    assert goals[("sample_without_replacement <= 6 us, 64x32000 k=4", "cuda")] == "MISSED"
    assert goals[("verify_tree traversal <= 40 us/row, B=1 T=31 V=32000", "triton")] == "met"
    assert goals[("verify_tree traversal <= 40 us/row, B=1 T=31 V=32000", "cuda")] == "MISSED"
    assert goals[("equal to the reference (kernel tests)", "triton")] == "met"
    assert goals[("equal to the reference (kernel tests)", "cuda")] == "MISSED"
    assert "tests    FAILED (rc 1)" in out and "65%" in out and "no e2e results" in out
    table = [l for l in out.splitlines() if l.startswith("tree_attention") and gqa in l]
    assert any(l.split()[-1] == "met" and " triton " in l for l in table)
    assert any(l.split()[-1] == "MISSED" and " cuda " in l for l in table)


def test_report_without_any_results(tmp_path, capsys):
    (tmp_path / "steps.tsv").write_text("build\tTIMEOUT (rc 124)\t150\t\n")
    assert report.main([str(tmp_path / "missing.json"), "--steps", str(tmp_path / "steps.tsv"),
                        "--tests", str(tmp_path / "missing.xml")]) == 0
    out = capsys.readouterr().out
    assert "TIMEOUT (rc 124)" in out and "(no benchmark rows)" in out
    lines = _goal_lines(out)
    assert len(lines) == 16 and all("not measured" in l for l in lines)
    assert all("(build failed)" in l for l in lines if " cuda " in l)


def test_gpu_check_dry_run_prints_the_table(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path), GPU_CHECK_DRY_RUN="1", GPU_CHECK_SKIP="tests",
               GPU_CHECK_BENCH_FILES="bench/bench_verify.py", E2E_ARGS="--budgets 6 --blocks 1 --warmup 0 --patterns none",
               OMP_NUM_THREADS="1")
    p = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh")], env=env, capture_output=True, text=True,
                       timeout=300)
    out = p.stdout
    assert p.returncode != 0, out  # the build cannot succeed on a CPU
    summary = (tmp_path / "summary.txt").read_text()
    steps = {l.split()[0]: l.split()[1] for l in summary.splitlines() if l.startswith(("build ", "tests ", "bench ", "e2e "))}
    assert steps == {"build": "FAILED", "tests": "skipped", "bench": "ok", "e2e": "ok"}, summary
    assert "== goals" in summary and "verify_tree" in summary and "not measured (build failed)" in summary
    assert "cuda: the CUDA extension did not build" in summary  # the bench step did not retry the build
    assert "PROJECTED token rate" in summary and "tiny target (projected)" in summary
    assert json.loads((tmp_path / "e2e" / "projected.json").read_text())["runs"]
    # method="auto": the cost profile and the trees it would choose (tiny shapes here)
    assert "auto\tok" in (tmp_path / "steps.tsv").read_text()
    prof = json.loads((tmp_path / "auto" / "auto_profile.json").read_text())
    assert prof["profiles"]["1"]["profile"]["target_n"][0] == 1 and len(prof["profiles"]["1"]["choices"]["T=0"]) == 5


def test_run_bench_order_and_deadline(tmp_path):
    run_bench = _load("run_bench")
    out = tmp_path / "b.json"
    files = [os.path.join(ROOT, "bench", f) for f in ("bench_attention.py", "bench_verify.py")]
    assert run_bench.main(["--out", str(out), "--deadline-s", "0", *files]) == 0
    data = json.loads(out.read_text())
    assert data["benchmarks"] == [] and data["errors"] == []
    names = [s["name"] for s in data["skipped"]]
    # every file's first (goal) shape before any second shape
    first_verify = next(i for i, n in enumerate(names) if n.startswith("bench_verify"))
    second_attn = next(i for i, n in enumerate(names) if n.startswith("bench_attention") and "B2_" in n)
    assert first_verify < second_attn
    assert any(s["reason"] == "not run: deadline" for s in data["skipped"])
