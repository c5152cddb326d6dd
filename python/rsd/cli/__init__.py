"""The ``rsd`` command line.

``rsd generate "prompt" --method rsd-s --budget 30`` prints the generated text and a one-line
summary (block efficiency, tokens/s, speed-up over the target alone measured in the same run).

Subcommands are plug-ins: :data:`SUBCOMMANDS` lists ``(module, names, description)``; each
module has ``add_parser(subparsers)`` (registering the subparsers ``names``) and
``run(args) -> int``. A module that cannot be imported keeps its names, marked unavailable in
``rsd --help``; calling one prints the import error and exits with status 2. ``train-draft`` and ``train-eagle`` forward their arguments to ``rsd.train.draft.main(argv)`` and ``rsd.train.eagle.main(argv)``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

SUBCOMMANDS = [
    ("rsd.cli.generate", ("generate",), "generate text with speculative decoding"),
    ("rsd.cli.profile", ("profile",), "measure this machine's cost profile (method auto)"),
    ("rsd.eval.cli", ("eval", "plot"), "evaluation grid and the seed figure"),
    ("rsd.cli.train", ("train-draft", "train-eagle"), "train the embedded draft / the EAGLE-style draft"),
]


def build_parser(command=None):
    """The ``rsd`` parser. With ``command`` (a subcommand name) only that subcommand's module is
    imported; the others get a placeholder with their description (so ``rsd generate`` with bad
    arguments fails before the training modules import transformers)."""
    ap = argparse.ArgumentParser(prog="rsd", description="Exact tree-based speculative decoding (RSD-S, RSD-C, "
                                 "SpecTr, SD) on transformers models.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    unavailable = []
    for modname, names, what in SUBCOMMANDS:
        if command is not None and command not in names:
            for name in names:
                sub.add_parser(name, help=what, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
            continue
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            why = f"{', '.join(names)} ({what}) is not available: cannot import {modname}: {exc}"
            unavailable.append(why)
            for name in names:  # keep the name so that calling it explains why it is missing
                p = sub.add_parser(name, help=f"[unavailable] {what}", add_help=False)
                p.add_argument("rest", nargs=argparse.REMAINDER)
                p.set_defaults(_rsd_unavailable=why)
            continue
        before = set(sub.choices)
        mod.add_parser(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(_rsd_module=modname)
    if unavailable:
        ap.epilog = "unavailable subcommands: " + "; ".join(unavailable)
    return ap, unavailable


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    known = {name for _, names, _ in SUBCOMMANDS for name in names}
    ap, unavailable = build_parser(command if command in known else None)
    args, extra = ap.parse_known_args(argv)
    if args.command is None:
        ap.print_help()
        return 2
    if getattr(args, "_rsd_unavailable", None):
        print(f"rsd {args.command}: {args._rsd_unavailable}", file=sys.stderr)
        return 2
    if hasattr(args, "train_args"):  # forwarding subcommands get everything after their name, options included
        args.train_args = argv[argv.index(args.command) + 1:]
    elif extra:
        ap.error("unrecognized arguments: " + " ".join(extra))
    mod = importlib.import_module(args._rsd_module)
    try:
        return int(mod.run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        print(f"rsd {args.command}: error: {exc}", file=sys.stderr)
        return 2


