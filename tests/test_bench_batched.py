"""bench/batched_loop.py --tiny runs end to end on the tiny offline pair (so the benchmark cannot rot),
and ``rsd generate --prompts-file`` decodes a batch from the command line."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def test_batched_bench_tiny(tmp_path):
    out = tmp_path / "batched.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, os.path.join(REPO, "bench", "batched_loop.py"), "--tiny", "--batches", "1,3",
                        "--new", "4", "--json", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())["results"]
    assert [(r["method"], r["batch"]) for r in res] == [("ar", 1), ("ar", 3), ("rsd-s", 1), ("rsd-s", 3)]
    for r in res:
        assert r["same_tokens"] and r["tokens"] == 4 * r["batch"]
        assert r["batched_tok_s"] > 0 and r["sequential_tok_s"] > 0 and r["ratio"] > 0
    assert "ratio" in p.stdout


def test_cli_prompts_file(tmp_path):
    from eval_tiny_pair import save_tiny_pair

    tgt, drf = save_tiny_pair(str(tmp_path))
    pf = tmp_path / "prompts.jsonl"
    pf.write_text('hello there\n{"prompt": "a longer prompt with several more words"}\n\n"x"\n')
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "rsd.cli", "generate", "--prompts-file", str(pf), "--target", tgt, "--draft", drf,
            "--method", "sd", "--budget", "3", "--max-new-tokens", "6"]
    p = subprocess.run(base + ["--json"], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["batch"] == 3 and [r["prompt"] for r in out["rows"]] == [
        "hello there", "a longer prompt with several more words", "x"]
    assert out["num_tokens"] == 18 and out["tokens_per_s"] > 0 and out["baseline_tokens_per_s"] > 0
    assert all(r["result"]["num_tokens"] == 6 and r["result"]["tokens_per_s"] > 0 for r in out["rows"])
    p = subprocess.run(base + ["--no-baseline"], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("--- row ") == 3 and "batch of 3" in p.stdout and "tok/s total" in p.stdout
