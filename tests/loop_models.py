"""Shared, cached models for the decoding-loop tests (tests/test_loop_*.py).

The embedded target is loaded once per test session (it takes ~25 s on 2 CPU cores). Tiny
random Llama models serve the error-path tests that need no trained weights.
"""
from __future__ import annotations

import functools

import torch

import rsd_kernels

torch.set_num_threads(1)

PROMPT = "What is the capital of France?"


@functools.lru_cache(maxsize=None)
def embedded_target():
    """``rsd.engine.models.LoadedModel`` of the embedded SmolLM2-135M-Instruct target."""
    from rsd.engine.models import load_target

    return load_target("embedded")


@functools.lru_cache(maxsize=None)
def embedded_draft():
    """The embedded pair's draft: ``load_draft("embedded")`` (the shipped draft when the package has
    it, else the labelled truncated-target stand-in)."""
    from rsd.engine.models import load_draft

    return load_draft("embedded", embedded_target(), log=lambda m: None)


@functools.lru_cache(maxsize=None)
def chat_ids(text: str = PROMPT) -> tuple:
    from rsd.engine.models import prompt_ids

    return tuple(prompt_ids(embedded_target().tokenizer, text, chat=True))


class BiasedDraft(torch.nn.Module):
    """A draft that is the target plus a fixed random logit bias: it agrees with the target
    often but not always (partial acceptance), which a stand-in with near-zero acceptance
    cannot exercise. Same call signature as a transformers causal LM."""

    def __init__(self, target, scale: float, seed: int = 0):
        super().__init__()
        self.inner = target
        self.config = target.config
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("bias", torch.randn(target.config.vocab_size, generator=g) * scale)

    def forward(self, **kw):
        out = self.inner(**kw)
        out.logits = out.logits + self.bias.to(out.logits.dtype)
        return out


def tiny_llama(vocab_size=64, layers=2, max_positions=64, seed=0):
    """A tiny random LlamaForCausalLM (for error paths)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions)
    return LlamaForCausalLM(cfg).eval()


@torch.no_grad()
def greedy_by_recompute(model, prompt, n):
    """Target-only greedy decoding recomputing the whole sequence each step (no KV cache)."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


def always_accept_first_child(target_logits, draft_logits, tree, **kw):
    """A verifier broken on purpose (negative controls of the chi-square tests): every row accepts
    the root's first child, then emits the target's argmax there."""
    B = target_logits.shape[0]
    path = torch.full((B, tree.max_depth + 1), -1, dtype=torch.int64)
    path[:, 0], path[:, 1] = 0, 1
    return rsd_kernels.VerifyResult(path, torch.ones(B, dtype=torch.int64), target_logits[:, 1].argmax(-1))
