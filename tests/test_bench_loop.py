"""bench/loop_split.py --tiny runs end to end on the tiny offline pair (so the benchmark cannot rot)."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_loop_split_tiny(tmp_path):
    out = tmp_path / "split.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, os.path.join(REPO, "bench", "loop_split.py"), "--tiny", "--lengths", "30",
                        "--blocks", "2", "--json", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    for m in ("ar", "sd", "spectr", "rsd-c", "rsd-s"):
        assert f" {m} " in p.stdout
    assert "ar vs HF generate" in p.stdout and "same tokens: True" in p.stdout
    import json

    res = json.loads(out.read_text())["now"]["lengths"]["30"]
    for m in ("sd", "spectr", "rsd-c", "rsd-s"):
        parts = res[m]["parts"]
        assert set(parts) == {"draft", "target", "verify", "cache", "other"}
        assert parts["draft"] > 0 and parts["target"] > 0 and res[m]["block_s"] > 0
