"""The backend-level ops as ``torch.library`` custom ops (namespace ``rsd``), with fake
(meta) implementations, so that they compose with ``torch.compile`` and CUDA graphs.

``torch.ops.rsd.<op>`` takes what a public op hands to its backend -- validated, contiguous
tensors and explicit scalars -- plus the backend name (``"auto"``, ``"torch"``,
``"triton"``, ``"cuda"``), and returns the backend's outputs:

* ``rsd::verify_tree(target_logits, draft_logits?, tokens, parents, num_nodes, mode,
  temperature, max_depth, uniform?, gumbel?, seed?, offset, backend) -> (path, num_accepted, next_token)``
* ``rsd::tree_attention(q, k, v, mask_bits, prefix_lens, scale, backend) -> out``
* ``rsd::sample_without_replacement(logits, k, kmax, temperature, gumbel?, seed?, offset, backend)
  -> (tokens, logprobs, num_sampled)``
* ``rsd::stochastic_beam_step(logits, phi, G, width, temperature, gumbel?, seed?, offset, backend)
  -> (parent, tokens, phi, G)``

The public functions (:func:`rsd_kernels.verify_tree`, ...) validate data-dependently (a
host sync) and then call the same backends; inside a compiled region or a captured graph,
call these ops with inputs you have validated once.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import backends


def _impl(op, backend, device):
    return backends.resolve(op, backend, device)[1]


@torch.library.custom_op("rsd::verify_tree", mutates_args=())
def verify_tree_op(target_logits: torch.Tensor, draft_logits: Optional[torch.Tensor], tokens: torch.Tensor,
                   parents: torch.Tensor, num_nodes: torch.Tensor, mode: str, temperature: float, max_depth: int,
                   uniform: Optional[torch.Tensor], gumbel: Optional[torch.Tensor], seed: Optional[int], offset: int,
                   backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    fn = _impl("verify_tree", backend, target_logits.device)
    path, nacc, nxt = fn(target_logits, draft_logits, tokens, parents, num_nodes, mode, temperature, max_depth,
                         uniform=uniform, gumbel=gumbel, seed=seed, offset=offset)
    return path.contiguous(), nacc.contiguous(), nxt.contiguous()


@verify_tree_op.register_fake
def _(target_logits, draft_logits, tokens, parents, num_nodes, mode, temperature, max_depth, uniform, gumbel, seed,
      offset, backend):
    B = target_logits.shape[0]
    new = target_logits.new_empty
    return (new((B, max_depth + 1), dtype=torch.int64), new((B,), dtype=torch.int64), new((B,), dtype=torch.int64))


@torch.library.custom_op("rsd::tree_attention", mutates_args=())
def tree_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_bits: torch.Tensor,
                      prefix_lens: torch.Tensor, scale: float, backend: str) -> torch.Tensor:
    return _impl("tree_attention", backend, q.device)(q, k, v, mask_bits, prefix_lens, scale).contiguous()


@tree_attention_op.register_fake
def _(q, k, v, mask_bits, prefix_lens, scale, backend):
    return torch.empty_like(q)


@torch.library.custom_op("rsd::sample_without_replacement", mutates_args=())
def sample_op(logits: torch.Tensor, k: torch.Tensor, kmax: int, temperature: float, gumbel: Optional[torch.Tensor],
              seed: Optional[int], offset: int, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    fn = _impl("sample_without_replacement", backend, logits.device)
    tok, lp, num = fn(logits, k, kmax, temperature, gumbel=gumbel, seed=seed, offset=offset)
    return tok.contiguous(), lp.contiguous(), num.contiguous()


@sample_op.register_fake
def _(logits, k, kmax, temperature, gumbel, seed, offset, backend):
    R = logits.shape[0]
    new = logits.new_empty
    return new((R, kmax), dtype=torch.int64), new((R, kmax), dtype=torch.float32), new((R,), dtype=torch.int32)


@torch.library.custom_op("rsd::stochastic_beam_step", mutates_args=())
def beam_step_op(logits: torch.Tensor, phi: torch.Tensor, G: torch.Tensor, width: int, temperature: float,
                 gumbel: Optional[torch.Tensor], seed: Optional[int], offset: int,
                 backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    fn = _impl("stochastic_beam_step", backend, logits.device)
    out = fn(logits, phi, G, width, temperature, gumbel=gumbel, seed=seed, offset=offset)
    return tuple(x.contiguous() for x in out)


@beam_step_op.register_fake
def _(logits, phi, G, width, temperature, gumbel, seed, offset, backend):
    B = logits.shape[0]
    dt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    new = logits.new_empty
    return (new((B, width), dtype=torch.int64), new((B, width), dtype=torch.int64), new((B, width), dtype=dt),
            new((B, width), dtype=dt))
