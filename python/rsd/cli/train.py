"""``rsd train-draft ARGS...`` and ``rsd train-eagle ARGS...``: forward ARGS to the ``main(argv)`` of
``rsd.train.draft`` (the independent draft) and ``rsd.train.eagle`` (the EAGLE-style draft).

Importing this module fails (and the CLI marks both subcommands unavailable with the reason)
when either training module is not importable.
"""
from __future__ import annotations

import argparse
import importlib

import rsd.train.draft  # noqa: F401  (import error = subcommands unavailable)
import rsd.train.eagle  # noqa: F401

TRAINERS = {
    "train-draft": ("rsd.train.draft", "train the embedded draft"),
    "train-eagle": ("rsd.train.eagle", "train the EAGLE-style (feature-level) draft"),
}


def add_parser(subparsers):
    for name, (_, what) in TRAINERS.items():
        p = subparsers.add_parser(name, help=f"{what} (arguments: rsd {name} --help)", add_help=False)
        p.add_argument("train_args", nargs=argparse.REMAINDER)


def run(args) -> int:
    importlib.import_module(TRAINERS[args.command][0]).main(args.train_args)
    return 0
