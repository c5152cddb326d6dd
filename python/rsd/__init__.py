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

# The public names load on first use (PEP 562), so that ``import rsd.cli`` (argument checks,
# ``--help``) does not pay for torch and transformers before it needs them.
_LAZY = {"generate": ".engine.generate", "GenerationResult": ".engine.results",
         "CUSTOM_GENERATE_PATH": ".hf_generate"}
__all__ = ["generate", "GenerationResult", "CUSTOM_GENERATE_PATH"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rsd' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
