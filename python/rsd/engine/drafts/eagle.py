"""A feature-level (EAGLE-style) draft for the embedded target (issue 11).

Architecture
------------
At position ``t`` the draft reads the token ``x_t`` and a *feature* ``f_{t-1}``: the
target's last hidden state at ``t - 1`` (after the target's final norm, i.e. what the
target's ``LlamaModel`` returns as ``last_hidden_state`` and feeds to its LM head), or, for
tree nodes whose parent the target has not seen, the draft's own predicted feature of the
parent::

    u_t   = fc([embed(x_t) ; f_{t-1}])                # fusion, Linear(2H -> H, bias)
    h_t   = LlamaModel-without-embedding(u_t)         # 1 (or 2) decoder layers at the target's width
    f^_t  = norm(h_t)                                 # RMSNorm, initialised from the target's final norm
    logits_t = head(f^_t)  over kept_ids, -inf elsewhere

``f^_t`` is the draft's prediction of the target's feature ``f_t`` (trained with a
smooth-L1 regression, as EAGLE) and is the feature the children of node ``t`` use. The
token embedding is the target's, frozen and not shipped. The backbone is a genuine
``transformers.LlamaModel`` (``inputs_embeds`` = the fused input), so it takes
``past_key_values`` (``DynamicCache``), ``position_ids`` and 2D or 4D (tree) masks
exactly like the target and like :class:`rsd.engine.drafts.restricted.RestrictedHeadDraft`.

The feature is the *post-norm* hidden state (EAGLE's choice, not the raw residual stream):
it is what a verification forward gives for free (``output_hidden_states=True`` ->
``hidden_states[-1]``, or ``target.model(...).last_hidden_state``), its scale is bounded
by the norm, and the draft's own norm (initialised as the target's final norm) maps its
hidden state into the same space.

What the decoding loop has to pass (API for issue 12)
-----------------------------------------------------
``EagleDraft.forward(input_ids, features, position_ids=None, attention_mask=None,
past_key_values=None, use_cache=None, full_vocab=True, logits_to_keep=0)``:

* ``input_ids`` ``[B, S]`` -- tokens ``x_t``;
* ``features`` ``[B, S, H]`` -- for each of those tokens the feature of the token *before*
  it (``f_{t-1}``): the target's last hidden state for committed tokens, the draft's
  predicted feature (``out.features`` of the parent node) for tree nodes. Any float dtype
  (cast to the draft's). For the very first token of a sequence (no predecessor) pass
  zeros;
* ``position_ids``, ``attention_mask`` (2D padding or 4D ``[B, 1, S, S_past + S]`` bool,
  True = attend, e.g. ancestor-or-self tree masks), ``past_key_values``, ``use_cache`` --
  exactly as for the target.

It returns :class:`EagleOutput` with ``logits`` ``[B, S, V]`` over the full vocabulary
(``-inf`` outside ``kept_ids``; ``full_vocab=False`` gives the ``[B, S, K]`` restricted
ones), ``features`` ``[B, S, H]`` (the predicted ``f^_t``) and ``past_key_values``.

One block of the loop (what EAGLE does; keeps every method exact because the tokens are
still drawn from exactly the ``q`` returned here):

1. the verification forward returns the target's features at the root and at every
   tree node (``output_hidden_states=True``, last entry);
2. crop the draft's cache to the committed prefix it had before the tree; feed the newly
   committed tokens ``[a_1 .. a_k, y]`` (accepted path + the bonus/corrected token) with
   features ``[F(root), F(a_1), .., F(a_k)]`` (each token gets its predecessor's target
   feature) at their positions; the draft cache then holds only target-featured entries;
3. the output at ``y`` (last position) gives ``q`` for the depth-1 children and ``f^_y``;
4. a depth-d node ``c`` with parent ``v`` is fed as token ``c`` with feature ``f^_v``
   (``f^_y`` for depth 1), position ``prefix_len + d``, and a 4D mask that lets it see the
   committed prefix and its tree ancestors only; its output gives ``q`` for its children
   and ``f^_c``. Nodes of one level go in one call;
5. after verification, crop the draft cache back to the committed prefix (step 2 again).

Cost: the first call per block processes ``k + 1`` tokens, later ones one tree level each.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel
from transformers.utils import ModelOutput

from .restricted import RestrictedHead, config_from_json, config_to_json, draft_config_from_target

FORMAT = "rsd-eagle-draft-v1"


class LayerTap:
    """Forward hooks that keep the outputs of some decoder layers of ``model`` (a ``...ForCausalLM``
    or its ``.model``) while attached (a ``with`` block, or :meth:`attach` for good):
    ``tap.outputs[i]`` after each forward. :meth:`features` lays out a target feature with extra
    layers as :class:`EagleDraft` reads it."""

    def __init__(self, model, layers):
        self.layers = tuple(int(i) for i in layers)
        blocks = getattr(getattr(model, "model", model), "layers", None)
        if self.layers and blocks is None:
            raise ValueError(f"feature_layers: {type(model).__name__} has no decoder layers (.model.layers)")
        n = 0 if blocks is None else len(blocks)
        bad = [i for i in self.layers if not 0 <= i < n]
        if bad:
            raise ValueError(f"feature_layers: {bad} outside the model's {n} decoder layers")
        self._mods = [blocks[i] for i in self.layers]
        self.outputs, self._hooks = {}, []

    def attach(self):
        def make(i):
            def hook(_m, _inp, out):
                self.outputs[i] = out[0] if isinstance(out, tuple) else out
            return hook
        self._hooks = [m.register_forward_hook(make(i)) for i, m in zip(self.layers, self._mods)]
        return self

    def detach(self):
        for h in self._hooks:
            h.remove()
        self._hooks = []

    __enter__ = attach

    def __exit__(self, *exc):
        self.detach()

    def features(self, last_hidden_state):
        """``[..., (len(layers) + 1) * H]``: the tapped layers' outputs, then the post-norm state."""
        return torch.cat([self.outputs[i] for i in self.layers] + [last_hidden_state], -1)


@dataclass
class EagleOutput(ModelOutput):
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None
    past_key_values: object | None = None


class EagleDraft(RestrictedHead, nn.Module):
    """EAGLE-style draft: fusion(feature, embedding) -> Llama layer(s) -> norm -> restricted head."""

    def __init__(self, config: LlamaConfig, kept_ids: torch.Tensor, feature_layers=()):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.model = LlamaModel(config)  # embed_tokens = the target's (frozen); norm = draft's final norm
        self.model.embed_tokens.weight.requires_grad_(False)
        self.fc = nn.Linear(2 * H, H, bias=True)
        self.feature_layers = tuple(int(i) for i in feature_layers)
        if self.feature_layers:  # target features = those layers' outputs + the final feature
            self.feat_proj = nn.Linear(self.feature_width, H, bias=False)
        kept_ids = torch.as_tensor(kept_ids, dtype=torch.long)
        self.head = nn.Linear(H, kept_ids.numel(), bias=False)
        self.register_buffer("kept_ids", kept_ids, persistent=True)

    @property
    def feature_width(self) -> int:
        """Width of a *target* feature: ``(len(feature_layers) + 1) * H`` (``H`` without extra layers)."""
        return (len(self.feature_layers) + 1) * self.config.hidden_size

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Target features ``[..., feature_width]`` -> ``[..., H]``: the extra layers' outputs
        RMS-normalised (no weight), then ``feat_proj`` (initialised to pick the final feature)."""
        H = self.config.hidden_size
        parts = list(features.split(H, -1))
        eps = self.config.rms_norm_eps
        parts[:-1] = [g * torch.rsqrt(g.float().pow(2).mean(-1, keepdim=True) + eps).to(g.dtype) for g in parts[:-1]]
        return self.feat_proj(torch.cat(parts, -1))

    def fuse(self, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``fc([embed(x) ; f])``. ``features`` is ``[..., H]`` (a predicted feature, or a target
        feature when there are no extra layers) or ``[..., feature_width]`` (a target feature with
        the extra layers' outputs, projected first)."""
        e = self.model.embed_tokens(input_ids)
        H = self.config.hidden_size
        w = features.shape[-1]
        if self.feature_layers and w == self.feature_width:
            features = self.project(features.to(e.dtype))
        elif w != H:
            raise ValueError(f"features: last dimension {w}, expected {H}"
                             + (f" or {self.feature_width}" if self.feature_layers else ""))
        return self.fc(torch.cat([e, features.to(e.dtype)], -1))

    def forward(self, input_ids, features, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=None, cache_position=None, logits_to_keep: int = 0, full_vocab: bool = True,
                **kwargs) -> EagleOutput:
        x = self.fuse(input_ids, features)
        out = self.model(inputs_embeds=x, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, use_cache=use_cache, cache_position=cache_position,
                         **kwargs)
        f = out.last_hidden_state
        h = f[:, -logits_to_keep:] if logits_to_keep else f
        logits = self.head(h)
        if full_vocab:
            logits = self.expand_logits(logits)
        return EagleOutput(logits=logits, features=f, past_key_values=out.past_key_values)


# ------------------------------------------------------------------ unrolled (tree-depth) passes
def unrolled_mask(pad_mask: torch.Tensor, step: int) -> torch.Tensor:
    """4D bool mask ``[B, 1, S, (step + 1) * S]`` for stream ``step`` over streams ``0..step``.

    Stream ``k`` at position ``t`` stands for a depth-``k`` tree node at ``t`` whose root is
    ``t - k`` (stream 0 = committed tokens with target features). It sees stream 0 at
    positions ``<= t - k`` (the committed prefix, padding excluded) and stream ``j`` at
    position ``t - k + j`` for ``j = 1..k`` (its tree ancestors and itself).
    """
    B, S = pad_mask.shape
    i = torch.arange(S)
    valid = pad_mask.bool()[:, None, None, :]  # key padding
    blocks = [((i[None, :] <= (i[:, None] - step))[None, None] & valid)]
    for j in range(1, step + 1):
        eye = (i[None, :] == (i[:, None] - step + j))[None, None].expand(B, 1, S, S)
        blocks.append(eye)
    return torch.cat(blocks, -1)


def unrolled_forward(draft: EagleDraft, input_ids: torch.Tensor, prev_features: torch.Tensor,
                     pad_mask: torch.Tensor, steps: int, noise: float = 0.0, detach: bool = False,
                     restricted: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The draft over a sequence as ``steps`` streams (training-time test, as EAGLE-3).

    ``input_ids`` ``[B, S]`` tokens ``x_t``; ``prev_features`` ``[B, S, draft.feature_width]``
    the target's ``f_{t-1}``; ``pad_mask`` ``[B, S]`` (1 = real token, right padding). Returns per stream
    ``k = 0..steps-1`` the pair ``(logits, features)`` at every position: stream ``k`` at
    ``t`` is exactly the draft's output at a depth-``k`` tree node (root ``t - k``) in a
    chain that follows the sequence, i.e. it gives ``q`` for the depth-``k + 1`` token
    ``x_{t+1}``. ``noise`` adds uniform noise ``U(-noise, noise)`` to the target features
    (EAGLE's input noise, training only); ``detach`` stops gradients through the predicted
    features of earlier streams.
    """
    from transformers import DynamicCache

    B, S = input_ids.shape
    pos = torch.arange(S).expand(B, S)
    feats = prev_features
    if noise:
        feats = feats + (torch.rand_like(feats) * 2 - 1) * noise
    cache = DynamicCache()
    outs = []
    for k in range(steps):
        if k > 0:  # the feature of x_t at stream k is stream k-1's prediction at t - 1
            prev = outs[-1][1]
            prev = prev.detach() if detach else prev
            feats = torch.cat([torch.zeros_like(prev[:, :1]), prev[:, :-1]], 1)
        m = unrolled_mask(pad_mask, k)
        o = draft(input_ids, feats, attention_mask=m, position_ids=pos, past_key_values=cache, use_cache=True,
                  full_vocab=not restricted)
        cache = o.past_key_values
        outs.append((o.logits, o.features))
    return outs


# ----------------------------------------------------------------------------- building / io
def eagle_config_from_target(target_config, num_layers: int = 1) -> LlamaConfig:
    return draft_config_from_target(target_config, num_layers)


def init_eagle_from_target(target, kept_ids: torch.Tensor, num_layers: int = 1,
                           init_layers: tuple[int, ...] | None = None, seed: int = 0,
                           init: str = "copy", feature_layers=()) -> EagleDraft:
    """Draft sharing the target's (frozen) embedding; head = the kept rows of the target's tied head,
    norm = the target's final norm, layers copied from the target's ``init_layers`` (default: its
    last ``num_layers``).

    ``init="copy"`` (default) starts as the identity on the feature: the layers' output
    projections (``o_proj``, ``down_proj``) are zero, so each layer is the identity on the
    residual stream, and the fusion maps ``[e ; f]`` to ``f / w`` (``w`` = the norm's weight),
    which the norm maps back to ``f`` exactly (``f`` is post-norm, so ``f / w`` has RMS 1).
    The untrained draft thus predicts ``f^_t = f_{t-1}`` and the distribution of the
    previous position -- a far better start than a random mix (KL ~6.8 instead of 10-13
    nats on the target's samples). The embedding part of the fusion starts at small noise.
    ``init="mean"``: fusion ``[0.5 I ; 0.5 I]``, layers copied unchanged.

    With ``feature_layers`` (EAGLE-3 style) the target feature also carries those decoder
    layers' outputs; ``feat_proj`` starts as ``[0 .. 0 ; I]`` (the final feature alone), so the
    untrained draft is the same as without them.
    """
    torch.manual_seed(seed)
    cfg = eagle_config_from_target(target.config, num_layers)
    n_t = target.config.num_hidden_layers
    bad = [i for i in feature_layers if not 0 <= int(i) < n_t]
    if bad:
        raise ValueError(f"feature_layers: {bad} outside the target's {n_t} layers")
    draft = EagleDraft(cfg, kept_ids, feature_layers)
    init_layers = tuple(init_layers) if init_layers is not None else tuple(range(n_t - num_layers, n_t))
    tsd = target.model.state_dict()
    sd = {"embed_tokens.weight": tsd["embed_tokens.weight"], "norm.weight": tsd["norm.weight"]}
    for i, src in enumerate(init_layers):
        for k, v in tsd.items():
            if k.startswith(f"layers.{src}."):
                sd[f"layers.{i}." + k[len(f"layers.{src}."):]] = v
    draft.model.load_state_dict(sd, strict=False)
    H = cfg.hidden_size
    with torch.no_grad():
        eye = torch.eye(H)
        noise = 0.01 * torch.randn(H, 2 * H) / H ** 0.5
        if init == "copy":
            w = draft.model.norm.weight.detach().float()
            w = torch.where(w.abs() < 1e-3, torch.full_like(w, 1e-3), w)
            draft.fc.weight.copy_(torch.cat([torch.zeros(H, H), torch.diag(1.0 / w)], 1) + noise)
            for layer in draft.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
        elif init == "mean":
            draft.fc.weight.copy_(torch.cat([0.5 * eye, 0.5 * eye], 1) + noise)
        else:
            raise ValueError(f"init must be 'copy' or 'mean', not {init!r}")
        draft.fc.bias.zero_()
        if draft.feature_layers:
            draft.feat_proj.weight.zero_()
            draft.feat_proj.weight[:, -H:].copy_(eye)
        draft.head.weight.copy_(target.get_output_embeddings().weight.detach()[kept_ids])
    draft.model.embed_tokens.weight.requires_grad_(False)
    return draft


def export_eagle(draft: EagleDraft, path: str, info: dict | None = None) -> str:
    """fp16 weights + int32 kept ids + config metadata; the token embedding is not included."""
    from safetensors.torch import save_file

    sd = {k: (v.to(torch.int32) if k == "kept_ids" else v.detach().to(torch.float16)).contiguous()
          for k, v in draft.trainable_state_dict().items()}
    save_file(sd, path, metadata={"format": FORMAT, "config": config_to_json(draft.config),
                                  "feature_layers": json.dumps(list(draft.feature_layers)),
                                  "info": json.dumps(info or {})})
    return path


def _no_init_weights():
    try:
        from transformers.initialization import no_init_weights  # transformers 5
    except ImportError:
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def load_eagle(path: str, embedding: torch.Tensor, dtype=torch.float32) -> EagleDraft:
    """Load :func:`export_eagle` output around the target's token embedding (shared, not copied)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an EAGLE draft (format {meta.get('format')!r})")
    config = config_from_json(meta["config"])
    kept = sd.pop("kept_ids").long()
    if tuple(embedding.shape) != (config.vocab_size, config.hidden_size):
        raise ValueError(f"embedding shape {tuple(embedding.shape)} does not match the draft's")
    with _no_init_weights():  # every weight is loaded below: skip the random init (~0.5 s of a start-up)
        draft = EagleDraft(config, kept, json.loads(meta.get("feature_layers", "[]")))
    missing, unexpected = draft.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False)
    missing = [k for k in missing if k not in ("model.embed_tokens.weight", "kept_ids")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the draft's config (missing {missing}, "
                         f"unexpected {unexpected})")
    emb = embedding.detach()
    draft.model.embed_tokens.weight = nn.Parameter(emb if emb.dtype == dtype else emb.to(dtype), requires_grad=False)
    draft.info = json.loads(meta.get("info", "{}"))
    draft.requires_grad_(False)
    return draft.to(dtype).eval()
