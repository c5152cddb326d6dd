"""A clean console: the command's own messages on stderr, the libraries' chatter only with ``--verbose``.

:func:`library_output` silences, for the duration of a command, what transformers and the other
libraries write while models load and run: transformers' log messages below errors, its progress
bars ("Loading weights"), Python warnings, and anything else written to ``sys.stderr`` (the GGUF
de-quantisation bar is a plain ``tqdm`` there). It yields the command's ``log(line)``, bound to the
real stderr, for the messages that matter (which models, device, dtype, a first-time conversion).
Errors still surface: they are exceptions, reported after the block by ``rsd.cli.main``.
"""
from __future__ import annotations

import contextlib
import io
import sys
import warnings


@contextlib.contextmanager
def library_output(verbose: bool):
    err = sys.stderr

    def log(line: str) -> None:
        print(line, file=err, flush=True)

    if verbose:
        yield log
        return
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield log
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
