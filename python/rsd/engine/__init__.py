"""The decoding engine: everything a block of speculative decoding needs, and nothing above it.

* :mod:`.generate` -- :func:`generate`, the entry point (one prompt or a batch);
* :mod:`.loop` -- the single-prompt loop (:class:`~rsd.engine.loop.Decoder`: tree building with the
  draft, the verification forward, ``verify_tree``, cache compaction);
* :mod:`.batched` -- the batched loop (one tree per row per block, batched forwards);
* :mod:`.results` -- :class:`BlockStats`, :class:`GenerationResult`, the stop rule;
* :mod:`.configs` -- the methods and their tree configurations;
* :mod:`.adapter`, :mod:`.kvcache` -- a transformers model behind a preallocated in-place KV cache;
* :mod:`.models`, :mod:`.embedded` -- loading target and draft by spec, tokenizer helpers;
* :mod:`.drafts` -- the draft architectures (restricted-head and EAGLE-style) and their shipped weights;
* :mod:`.cachedir` -- the user cache folder and atomic writes into it.

Nothing here imports the applications (:mod:`rsd.cli`, :mod:`rsd.eval`, :mod:`rsd.train`,
:mod:`rsd.hf_generate`).
"""
