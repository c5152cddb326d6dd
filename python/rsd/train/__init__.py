"""Draft training and evaluation (an application on top of :mod:`rsd.engine`).

* :mod:`.draft` -- ``rsd train-draft``: the independent restricted-head draft
  (``docs/draft-model-card.md``); also the shared pieces (target sampling, soft labels, the
  training loop) the EAGLE trainer reuses;
* :mod:`.eagle` -- ``rsd train-eagle``: the EAGLE-style feature-level draft (``docs/eagle-draft.md``);
* :mod:`.evaluate`, :mod:`.evaluate_eagle` -- held-out acceptance, block efficiency and cost;
* :mod:`.prompts` -- the prompts written for training and evaluation.
"""
