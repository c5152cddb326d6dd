"""rsd: the speculative decoding loop and evaluation built on ``rsd_kernels``.

``rsd.generate(target, draft, prompt_ids, method, config, budget, ...)`` is
:func:`rsd.generate.generate` (the function; the module stays importable as ``rsd.generate``
through ``from rsd.generate import ...``).
"""
__version__ = "0.1.0"

from .generate import GenerationResult, generate  # noqa: E402,F401
from .hf_generate import CUSTOM_GENERATE_PATH  # noqa: E402,F401
