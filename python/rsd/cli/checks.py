"""Every check of ``rsd generate``'s arguments that does not need the models, run before any
model is loaded (and before transformers is imported): a bad argument fails in about the time
it takes to import torch, not after the target has loaded.

The checks are the engine's own (:mod:`rsd_kernels.checks`, :func:`rsd.engine.configs.resolve_config`,
:func:`rsd.engine.results.check_max_new_tokens`), called early; only what the command line adds
(files, threads, device, backend) is checked here first. What needs the models (the target's
context length, a draft's vocabulary, ``truncated:N`` against the target's layers) is checked
after loading.
"""
from __future__ import annotations

import os

from rsd_kernels import checks, noise

from ..engine.configs import resolve_config
from ..engine.results import check_max_new_tokens


def check_generate(args, method: str, config_text, budget):
    """Check ``rsd generate``'s parsed ``args`` (``method``, ``config_text``, ``budget``: from its
    tree flags) and return the tree configuration (``None`` for ``ar``). Raises
    ``ValueError``/``TypeError``/``FileNotFoundError`` naming the argument."""
    cfg = resolve_config(method, config_text, budget)
    if (args.prompt is None) == (args.prompts_file is None):
        raise ValueError("give a prompt or --prompts-file (not both)")
    if args.prompts_file is not None and not os.path.isfile(args.prompts_file):
        raise FileNotFoundError(f"--prompts-file: no such file: {args.prompts_file}")
    check_max_new_tokens(args.max_new_tokens)
    checks.sampling(args.temperature, args.top_k, args.top_p)
    noise.check_seed(args.seed, 0)
    if args.threads is not None:
        checks.positive_int("--threads", args.threads)
    _check_device_and_backend(args.device, args.backend)
    _check_model_spec("--target", args.target, draft=False)
    if method != "ar":
        _check_model_spec("--draft", args.draft, draft=True)
    return cfg


def _check_device_and_backend(device, backend):
    import torch

    from rsd_kernels import backends

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {device!r} is not a device: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device (torch {torch.__version__}, "
                         f"CUDA build {torch.version.cuda})")
    backends.resolve("verify_tree", backend, dev)  # ValueError: unknown backend, or one that cannot run here


def _check_model_spec(flag, spec, *, draft):
    """Files behind a spec exist; ``truncated:N`` has an integer N >= 1."""
    from ..engine.embedded import smollm2_gguf_path
    from ..engine.models import draft_weights_path

    if spec == "embedded" and not draft:
        smollm2_gguf_path()  # FileNotFoundError with the install hint
        return
    if not draft:
        return
    if spec.startswith("truncated:"):
        n = spec.split(":", 1)[1]
        if not n.strip().lstrip("-").isdigit() or int(n) < 1:
            raise ValueError(f"{flag} {spec!r}: expected 'truncated:N' with an integer N >= 1")
        return
    if spec.startswith("eagle:") and not spec.split(":", 1)[1]:
        raise ValueError(f"{flag} {spec!r}: expected 'eagle:PATH' with the path of an eagle.safetensors file")
    path = draft_weights_path(spec)
    if path is not None and not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {spec!r}: no such file: {path}")
