"""A tiny offline target/draft pair for the evaluation tests: random Llama models over a
byte-level tokenizer (256 byte tokens + ``<eos>``), saved as Hugging Face folders so that they
load through the same ``rsd.engine.models`` path as any model id."""
from __future__ import annotations

import os

import torch

VOCAB = 257


def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab["<eos>"] = len(alphabet)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(["<eos>"])
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<eos>")


def tiny_llama(layers, seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1, bos_token_id=None)
    return LlamaForCausalLM(cfg).eval()


def save_tiny_pair(folder: str) -> tuple[str, str]:
    """Write ``folder/target`` (2 layers) and ``folder/draft`` (1 layer); returns both paths."""
    tok = byte_tokenizer()
    paths = []
    for name, layers, seed in (("target", 2, 0), ("draft", 1, 1)):
        path = os.path.join(folder, name)
        tiny_llama(layers, seed).save_pretrained(path)
        tok.save_pretrained(path)
        paths.append(path)
    return tuple(paths)
