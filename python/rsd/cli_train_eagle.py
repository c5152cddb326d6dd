"""``rsd train-eagle ARGS...``: forwards ARGS to ``rsd.draft.train_eagle.main(argv)``."""
from __future__ import annotations

import argparse

from rsd.draft.train_eagle import main as _train_main  # noqa: F401  (import error = subcommand unavailable)


def add_parser(subparsers):
    p = subparsers.add_parser("train-eagle", help="train the EAGLE-style draft (arguments: rsd train-eagle --help)",
                              add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    return p


def run(args) -> int:
    from rsd.draft.train_eagle import main

    main(args.train_args)
    return 0
