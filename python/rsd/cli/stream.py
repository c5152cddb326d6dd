"""Streaming ``rsd generate``'s text as blocks are committed, showing where each token came from.

:class:`BlockPrinter` is the ``on_block(tokens, num_accepted)`` callback of
:func:`rsd.engine.generate.generate`: it writes the new text after every block and flushes. With
colour on, draft tokens the target accepted are green and tokens the target supplied itself (the
correction or bonus token of a block; every token of ``ar``) keep the terminal's colour.

Text is decoded incrementally the way vLLM and TGI do it: the new tokens are decoded together with a
few tokens before them, and only the part past those tokens' own text is new. A piece that ends in
an incomplete UTF-8 sequence (the replacement character) waits for the next token, so multi-byte
characters split over tokens come out whole, and the concatenated output equals
``tokenizer.decode(all tokens, skip_special_tokens=True)`` (``tests/test_cli_stream.py``).
"""
from __future__ import annotations

import os
import sys

GREEN, RESET = "\x1b[32m", "\x1b[0m"
CONTEXT_TOKENS = 6  # tokens decoded before the new ones, so that a word's leading space comes out right
LEGEND = "green: draft tokens the target accepted; plain: tokens the target supplied"


def use_color(stream, no_color_flag: bool) -> bool:
    """Colour only on a terminal, and never with ``--no-color`` or a non-empty ``NO_COLOR``
    (https://no-color.org)."""
    if no_color_flag or os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class BlockPrinter:
    """Writes the text of committed blocks to ``out`` (flushed per block); :meth:`finish` ends it."""

    def __init__(self, tokenizer, out=None, color: bool = False):
        self.tokenizer, self.out, self.color = tokenizer, out or sys.stdout, color
        self.ids: list[int] = []
        self.accepted: list[bool] = []  # per token: an accepted draft token (else the target's own)
        self.prefix = 0  # first token of the decoding window
        self.read = 0  # tokens whose text has been written
        self.written: list[str] = []

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def __call__(self, tokens, num_accepted: int) -> None:
        self.on_block(tokens, num_accepted)

    def on_block(self, tokens, num_accepted: int) -> None:
        for i, t in enumerate(tokens):
            self.ids.append(int(t))
            self.accepted.append(i < num_accepted)
        self._emit(final=False)
        self.out.flush()

    def finish(self) -> None:
        """Write what is still held back (an incomplete character at the very end) and a newline."""
        self._emit(final=True)
        self.out.write("\n")
        self.out.flush()

    @property
    def text(self) -> str:
        """Everything written so far (without colour codes)."""
        return "".join(self.written)

    def _emit(self, final: bool) -> None:
        runs: list[list] = []  # [text, accepted]: consecutive pieces of one origin, written together
        # one token at a time, so that each piece gets the origin of the token that completed it
        for n in range(self.read + 1, len(self.ids) + 1):
            before = self._decode(self.ids[self.prefix:self.read])
            now = self._decode(self.ids[self.prefix:n])
            if (now.endswith("\ufffd") and not (final and n == len(self.ids))) or not now.startswith(before):
                continue  # an incomplete character (or a merge that rewrites the window): wait for more
            piece, accepted = now[len(before):], self.accepted[n - 1]
            if piece:
                self.written.append(piece)
                if runs and runs[-1][1] == accepted:
                    runs[-1][0] += piece
                else:
                    runs.append([piece, accepted])
            self.prefix, self.read = max(self.prefix, n - CONTEXT_TOKENS), n
        for text, accepted in runs:
            self.out.write(f"{GREEN}{text}{RESET}" if self.color and accepted else text)
