"""rsd: the speculative decoding loop and evaluation built on ``rsd_kernels``.

``rsd.generate(target, draft, prompt_ids, method, config, budget, ...)`` is
:func:`rsd.engine.generate.generate`.

The package has two layers; imports run from the applications to the engine only:

* :mod:`rsd.engine` -- the decoding engine: the single-prompt loop (``loop``), the batched loop
  (``batched``), the public ``generate``, results and tree configurations (``results``,
  ``configs``), the KV caches (``kvcache``), the model adapter (``adapter``), model loading
  (``models``, ``embedded``) and the draft architectures with their shipped weights (``drafts``);
* applications on top: the command line (:mod:`rsd.cli`), the evaluation (:mod:`rsd.eval`), draft
  training (:mod:`rsd.train`) and the transformers ``custom_generate`` entry point
  (:mod:`rsd.hf_generate`, ``custom_generate/``).
"""
__version__ = "0.1.0"

from .engine.generate import generate  # noqa: E402,F401
from .engine.results import GenerationResult  # noqa: E402,F401
from .hf_generate import CUSTOM_GENERATE_PATH  # noqa: E402,F401
