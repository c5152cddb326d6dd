"""What the loops return and how a block's tokens are cut: :class:`BlockStats` (one block's
counts and time split), :class:`GenerationResult` (one prompt), the stop rule
(:func:`cut_new_tokens`, :func:`eos_set`). Shared by the single-prompt loop (:mod:`.loop`) and the
batched loop (:mod:`.batched`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rsd_kernels.methods import TreeConfig


@dataclass
class BlockStats:
    """One block (for ``ar``: one target step)."""

    accepted: int  # draft tokens accepted (0 for ar)
    emitted: int  # tokens committed by this block (accepted + the next token, cut at EOS / max_new_tokens)
    draft_calls: int
    target_calls: int
    draft_s: float  # tree building: draft forwards, sampling, masks
    target_s: float  # the target forward (verification forward; ar: the step)
    verify_s: float  # verification alone (ar: choosing the next token); the cache work is cache_s
    cache_s: float = 0.0  # KV-cache compaction of both models (moving the accepted path)
    other_s: float = 0.0  # everything else of the block (bookkeeping; method="auto": the choice)
    choice: object = None  # method="auto": the selector's Choice for this block (tree, rows, prediction)

    @property
    def total_s(self) -> float:
        return self.draft_s + self.target_s + self.verify_s + self.cache_s + self.other_s


class Timed:
    """Wall-time views of a result with ``blocks`` (:class:`BlockStats`), ``prefill_s`` and ``num_tokens``."""

    @property
    def decode_s(self) -> float:
        """Wall time of the blocks (prefill excluded)."""
        return sum(b.total_s for b in self.blocks)

    @property
    def wall_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of decoding (prefill excluded)."""
        return self.num_tokens / self.decode_s if self.decode_s > 0 else 0.0


@dataclass
class GenerationResult(Timed):
    tokens: list[int]  # the new tokens (prompt excluded)
    method: str
    config: TreeConfig | None  # None for ar
    blocks: list[BlockStats] = field(default_factory=list)
    prefill_s: float = 0.0
    stop_reason: str = "max_new_tokens"  # or "eos", "context"
    seed: int = 0
    verifier: str | None = None  # "rrs" or "traversal" (None for ar)

    @property
    def target_calls(self) -> int:
        """Target forwards after the prefill (the denominator of block efficiency)."""
        return sum(b.target_calls for b in self.blocks)

    @property
    def draft_calls(self) -> int:
        return sum(b.draft_calls for b in self.blocks)

    @property
    def accepted_lengths(self) -> list[int]:
        return [b.accepted for b in self.blocks]

    @property
    def block_efficiency(self) -> float:
        """Generated tokens per target verification call (prefill excluded)."""
        return len(self.tokens) / self.target_calls if self.target_calls else 0.0

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def time_split(self) -> dict:
        """Wall seconds per part; the parts sum to :attr:`wall_s`."""
        out = {"prefill_s": self.prefill_s}
        for k in ("draft_s", "target_s", "verify_s", "cache_s", "other_s"):
            out[k] = sum(getattr(b, k) for b in self.blocks)
        return out

    def choices(self) -> list[dict]:
        """``method="auto"``: per block the chosen configuration (None: target only), the padded
        verification rows, the predicted and realised seconds and tokens, and why it was chosen."""
        return block_choices(self.blocks)

    def to_dict(self) -> dict:
        out = {
            "method": self.method, "config": None if self.config is None else str(self.config),
            "budget": None if self.config is None else self.config.budget, "seed": self.seed,
            "verifier": self.verifier,
            "tokens": list(self.tokens), "num_tokens": len(self.tokens), "stop_reason": self.stop_reason,
            "block_efficiency": self.block_efficiency, "tokens_per_s": self.tokens_per_s,
            "target_calls": self.target_calls, "draft_calls": self.draft_calls,
            "accepted_lengths": self.accepted_lengths, **self.time_split(),
        }
        if any(b.choice is not None for b in self.blocks):
            out["choices"] = self.choices()
        return out


def block_choices(blocks) -> list[dict]:
    """The selector's choice and the realised outcome of each block (blocks without a choice: skipped)."""
    out = []
    for b in blocks:
        if b.choice is not None:
            out.append({**b.choice.to_dict(), "realised_s": b.total_s, "tokens": b.emitted, "accepted": b.accepted})
    return out


def check_max_new_tokens(value) -> int:
    """``value`` if it is a positive int, else ``ValueError`` naming ``max_new_tokens``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {value!r}")
    return value


def cut_new_tokens(new: list[int], room: int, eos: set) -> tuple[list[int], str | None]:
    """A block's tokens cut to the ``room`` left under ``max_new_tokens`` and after the first EOS
    (kept); the stop reason ``"eos"`` if one was met, else ``None``."""
    new = new[:room]
    for j, t in enumerate(new):
        if t in eos:
            return new[: j + 1], "eos"
    return new, None


def eos_set(eos_token_id):
    """The set of EOS ids of ``eos_token_id`` (None, an int or a collection of ints)."""
    if eos_token_id is None:
        return set()
    if isinstance(eos_token_id, int):
        return {eos_token_id}
    return {int(t) for t in eos_token_id}
