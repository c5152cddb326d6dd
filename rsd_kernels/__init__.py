"""rsd-kernels: kernels for exact tree-based speculative decoding.

Public ops (each takes ``backend="auto" | "torch" | "triton" | "cuda"``):

* :func:`verify_tree` -- recursive rejection sampling / SpecTr / traversal / greedy verification of a draft tree
* :func:`tree_attention` -- attention of tree nodes over a KV cache with the ancestor mask
* :func:`sample_without_replacement` -- Gumbel-top-k
* :func:`stochastic_beam_step` -- one level of RSD-S's stochastic beam search

plus :func:`expected_accepted_length` / :func:`acceptance_law` (a verifier's exact outcome law on a
given tree, no sampling), the tree layout :class:`DraftTree`, :func:`warp_logits`, and the tree builders of the four
methods in :mod:`rsd_kernels.methods`.
"""
from . import backends, noise
from .attention import tree_attention
from .methods import TreeConfig, build_tree, configs_for_budget, default_config, parse_config
from .sampling import BeamStepResult, SampleResult, sample_without_replacement, stochastic_beam_step
from .tree import DraftTree
from .verify import AcceptanceLaw, VerifyResult, acceptance_law, expected_accepted_length, verify_tree
from .warp import warp_logits

__version__ = "0.1.0"
__all__ = [
    "DraftTree", "verify_tree", "VerifyResult", "tree_attention", "sample_without_replacement", "SampleResult",
    "stochastic_beam_step", "BeamStepResult", "warp_logits", "TreeConfig", "build_tree", "configs_for_budget",
    "default_config", "parse_config", "backends", "noise", "acceptance_law", "AcceptanceLaw", "expected_accepted_length",
]
