"""Every argument of ``rsd generate`` is checked before any model loads (issue 22), and the
sampling arguments are checked whatever the temperature; budgets beyond the limit are refused
with the limit named, large ones cost one line on stderr."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from rsd.engine.configs import LARGE_BUDGET, MAX_BUDGET, budget_cost, resolve_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (arguments after `rsd generate "Hi"`, text the error must contain)
BAD = [
    (["--max-new-tokens", "0"], "max_new_tokens must be a positive int"),
    (["--temperature", "-1"], "temperature must be finite and >= 0"),
    (["--draft", "eagle:/nonexistent.safetensors"], "no such file: /nonexistent.safetensors"),
    (["--draft", "eagle:"], "expected 'eagle:PATH'"),
    (["--draft", "truncated:x"], "expected 'truncated:N'"),
    (["--budget", "0"], "budget must be a positive int"),
    (["--chain", "0"], "shape must be positive ints"),
    (["--top-p", "2"], "top_p must be a float in (0, 1]"),  # greedy: ignored before, refused now
    (["--top-k", "0"], "top_k must be >= 1"),
    (["--budget", "1000"], f"exceeds the limit of {MAX_BUDGET} draft tokens"),
    (["--beam", "100x3"], f"exceeds the limit of {MAX_BUDGET} draft tokens"),
    (["--prompts-file", "/nonexistent/prompts.txt"], "give a prompt or --prompts-file"),
    (["--seed", "-1"], "seed must be an int in [0, 2**63)"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--device", "cuda:x"], "--device 'cuda:x' is not a device"),
    (["--backend", "foo"], "backend must be one of"),
]


@pytest.fixture
def no_loading(monkeypatch):
    """Loaders that fail the test if the command gets as far as loading a model."""
    import rsd.engine.models as models

    def fail(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "load_target", fail)
    monkeypatch.setattr(models, "load_draft", fail)


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_argument_fails_before_loading(no_loading, capsys, extra, message):
    from rsd.cli import main

    assert main(["generate", "Hi", *extra]) == 2
    assert message in capsys.readouterr().err


def test_missing_prompts_file_fails_before_loading(no_loading, capsys):
    from rsd.cli import main

    assert main(["generate", "--prompts-file", "/nonexistent/prompts.txt"]) == 2
    assert "--prompts-file: no such file: /nonexistent/prompts.txt" in capsys.readouterr().err


def test_unknown_method_is_an_argparse_error(no_loading, capsys):
    from rsd.cli import main

    with pytest.raises(SystemExit) as e:
        main(["generate", "Hi", "--method", "foo"])
    assert e.value.code == 2 and "invalid choice: 'foo'" in capsys.readouterr().err


def test_json_error_is_one_object(no_loading, capsys):
    from rsd.cli import main

    assert main(["generate", "Hi", "--top-p", "2", "--json"]) == 2
    assert "top_p must be a float" in json.loads(capsys.readouterr().out)["error"]


def test_large_budget_costs_one_line_before_loading(no_loading, capsys):
    from rsd.cli import main

    with pytest.raises(AssertionError, match="a model was loaded"):  # accepted: it goes on to load the models
        main(["generate", "Hi", "--method", "rsd-s", "--budget", str(LARGE_BUDGET + 8)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"note: budget {LARGE_BUDGET + 8} (rsd-s ")
    with pytest.raises(AssertionError, match="a model was loaded"):
        main(["generate", "Hi", "--method", "rsd-s", "--budget", str(LARGE_BUDGET)])
    assert capsys.readouterr().err == ""


def test_errors_arrive_without_importing_transformers():
    """In a fresh interpreter: every bad argument fails (exit 2) without importing transformers or
    calling a loader, well within the time bound (the import of torch is the floor)."""
    script = textwrap.dedent(f"""
        import io, json, sys, time, contextlib
        t0 = time.perf_counter()
        import rsd.engine.models as models
        def fail(*a, **k):
            raise SystemExit("loader called")
        models.load_target = models.load_draft = fail
        from rsd.cli import main
        out = []
        for extra, _ in {BAD!r}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(["generate", "Hi", *extra])
            out.append([rc, err.getvalue()])
        print(json.dumps({{"results": out, "transformers": "transformers" in sys.modules,
                          "seconds": time.perf_counter() - t0}}))
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "python")]))
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    for (extra, message), (rc, err) in zip(BAD, res["results"]):
        assert rc == 2 and message in err, (extra, err)
    assert not res["transformers"], "argument checks imported transformers"


def test_sampling_arguments_checked_when_greedy():
    from loop_models import tiny_llama
    from rsd.engine.generate import generate

    t, d = tiny_llama(seed=0), tiny_llama(seed=1, layers=1)
    for kw, msg in [(dict(top_p=2.0), "top_p must be a float"), (dict(top_p=0.0), "top_p must be a float"),
                    (dict(top_k=0), "top_k must be >= 1")]:
        with pytest.raises(ValueError, match=msg):
            generate(t, d, [1, 2, 3], "rsd-s", budget=10, **kw)  # temperature 0
        with pytest.raises(ValueError, match=msg):
            generate(t, d, [[1, 2, 3], [4, 5]], "rsd-s", budget=10, **kw)  # batched
    with pytest.raises(TypeError, match="top_k must be an int"):
        generate(t, None, [1, 2, 3], "ar", top_k=2.5)
    assert len(generate(t, d, [1, 2, 3], "rsd-s", budget=10, top_p=1.0, top_k=5, max_new_tokens=3).tokens) == 3


def test_budget_limit():
    assert resolve_config("rsd-s", None, MAX_BUDGET).budget == MAX_BUDGET
    for method in ("sd", "spectr", "rsd-c", "rsd-s"):
        with pytest.raises(ValueError, match=f"budget {MAX_BUDGET + 1} exceeds the limit of {MAX_BUDGET}"):
            resolve_config(method, None, MAX_BUDGET + 1)
    with pytest.raises(ValueError, match="budget 300 exceeds the limit"):
        resolve_config("rsd-s", "100x3", None)
    assert budget_cost(resolve_config("rsd-s", None, LARGE_BUDGET)) is None
    assert budget_cost(None) is None
    line = budget_cost(resolve_config("rsd-s", None, 40))
    assert "41 tokens in one forward" in line and "at most 5 tokens" in line and "\n" not in line
