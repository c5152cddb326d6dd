"""``rsd train-draft ARGS...``: forwards ARGS to ``rsd.draft.train.main(argv)``.

Importing this module fails (and the CLI marks ``train-draft`` unavailable with the reason)
when ``rsd.draft.train`` is not importable.
"""
from __future__ import annotations

import argparse

from rsd.draft.train import main as _train_main  # noqa: F401  (import error = subcommand unavailable)


def add_parser(subparsers):
    p = subparsers.add_parser("train-draft", help="train the embedded draft (arguments: rsd train-draft --help)",
                              add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    return p


def run(args) -> int:
    from rsd.draft.train import main

    main(args.train_args)
    return 0
