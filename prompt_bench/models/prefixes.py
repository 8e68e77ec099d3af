"""Per-layer key/value prefixes (P-tuning v2 / prefix tuning): L trainable key and value vectors that every
self-attention layer attends to before the input's own keys.

P-tuning v2's code feeds prefixes as `past_key_values`, which transformers 5 no longer honours everywhere
(T5's encoder drops the cache; BERT shifts its position ids by the cache length). Instead we register one
attention function with transformers' AttentionInterface: for the self-attention modules of the blocks in
`backbone.transformer_layers()` (the encoder's, for seq2seq) it prepends the layer's prefix to the keys
and values, widens the attention mask to match, and hands over to the model's own attention kernel
(sdpa, or sdpa in place of eager). Prefixes have no position, so the input keeps positions 0..T-1.

`enable_prefixes(backbone)` switches this on once per backbone. Prefixes travel like deep prompts: per prompt in `label_logits(extras={PREFIX: [P, n_layers, 2, L, kv]})`,
per row in `current_rows(backbone).extras`. An optional boolean `PREFIX_MASK` ([P, L] / [rows, L]) hides
prefix positions from attention (Dynamic Prompting's per-instance length). Forwards without the key are
unchanged, so a zero-length prefix, or a fully masked one, gives exactly the model's own outputs.
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from prompt_bench.models.backbone import Backbone, current_rows

PREFIX = "prefix"
PREFIX_MASK = "prefix_mask"
_IMPLEMENTATION = "prompt_bench_prefix"


@dataclass
class _Site:
    backbone: "weakref.ref[Backbone]"
    layer: int


@dataclass(frozen=True)
class PrefixShape:
    """What one layer's key (or value) prefix looks like: kv_heads x head_dim, flattened to kv_dim."""

    n_layers: int
    kv_heads: int
    head_dim: int

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


_sites: "weakref.WeakKeyDictionary[torch.nn.Module, _Site]" = weakref.WeakKeyDictionary()
#: while `enable_prefixes` probes a model: the list its attention calls are recorded in (module, kv heads, head dim).
#: A ContextVar set and reset around the probe forward, for the reason `backbone.rows_scope` gives.
_probe: ContextVar[list | None] = ContextVar("prompt_bench_prefix_probe", default=None)


def _attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, **kwargs):
    calls = _probe.get()
    if calls is not None:
        calls.append((module, key.shape[1], key.shape[3]))
    site = _sites.get(module)
    backbone = site.backbone() if site is not None else None
    context = current_rows(backbone) if backbone is not None else None
    if context is not None and PREFIX in context.extras:
        causal = kwargs.get("is_causal")
        causal = bool(getattr(module, "is_causal", False) if causal is None else causal)
        length = context.extras[PREFIX].shape[3]
        key, value, attention_mask = _with_prefix(causal, site.layer, context.extras, query, key, value, attention_mask)
        if causal:
            kwargs["is_causal"] = False  # causality is in the explicit mask now
        bias = kwargs.get("position_bias")
        if bias is not None:  # T5: relative-position bias per key; prefixes have no position, so none
            kwargs["position_bias"] = torch.cat([bias.new_zeros(*bias.shape[:-1], length), bias], dim=-1)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _with_prefix(causal: bool, layer: int, extras: dict, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None):
    prefix: Tensor = extras[PREFIX]
    rows, heads, length, head_dim = key.shape[0], key.shape[1], prefix.shape[3], key.shape[3]
    if prefix.shape[0] != rows:
        raise ValueError(f"prefixes for {prefix.shape[0]} rows but layer {layer} got {rows} rows")
    kv = prefix[:, layer].to(device=key.device, dtype=key.dtype)  # [rows, 2, L, kv_dim]
    keys = kv[:, 0].view(rows, length, heads, head_dim).transpose(1, 2)
    values = kv[:, 1].view(rows, length, heads, head_dim).transpose(1, 2)
    keep = extras.get(PREFIX_MASK)
    keep = None if keep is None else keep.to(device=key.device, dtype=torch.bool)  # [rows, L]
    q_len, k_len = query.shape[2], key.shape[2]
    if mask is None:
        if causal and q_len > 1:
            body = torch.ones(q_len, k_len, dtype=torch.bool, device=key.device).tril(k_len - q_len)
            mask = body[None, None]
        elif keep is not None:
            mask = torch.ones(1, 1, q_len, k_len, dtype=torch.bool, device=key.device)
    if mask is not None:
        shape = (max(mask.shape[0], rows), mask.shape[1], q_len, length)
        if mask.dtype == torch.bool:
            front = torch.ones(shape, dtype=torch.bool, device=key.device)
            if keep is not None:
                front = front & keep[:, None, None, :]
        else:
            front = torch.zeros(shape, dtype=mask.dtype, device=key.device)
            if keep is not None:
                front = front.masked_fill(~keep[:, None, None, :], torch.finfo(mask.dtype).min)
        mask = torch.cat([front, mask.expand(shape[0], -1, -1, -1)], dim=-1)
    return torch.cat([keys, key], dim=2), torch.cat([values, value], dim=2), mask


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(_IMPLEMENTATION, _attention)
    AttentionMaskInterface.register(_IMPLEMENTATION, sdpa_mask)  # masks shaped as for sdpa, which we hand over to


_shapes: "weakref.WeakKeyDictionary[Backbone, PrefixShape]" = weakref.WeakKeyDictionary()


def enable_prefixes(backbone: Backbone) -> PrefixShape:
    """Make `backbone` honour `extras[PREFIX]` from now on (idempotent); returns the prefix shape it expects.

    Without prefixes in a forward the model runs its usual sdpa attention, so leaving this on is free.
    """
    if backbone in _shapes:
        return _shapes[backbone]
    _register()
    model = backbone.model
    model.set_attn_implementation(_IMPLEMENTATION)
    layers = list(backbone.transformer_layers())
    calls: list = []
    token = _probe.set(calls)
    try:
        with torch.no_grad():
            backbone.probe_forward()
    finally:
        _probe.reset(token)
    kv_heads = head_dim = 0
    for index, layer in enumerate(layers):
        inside = set(layer.modules())
        # the first attention inside a block is its self-attention (a decoder's cross-attention comes later)
        first = next((c for c in calls if c[0] in inside), None)
        if first is None:
            raise NotImplementedError(f"{type(model).__name__}: block {index} calls no attention function we can extend")
        _sites[first[0]] = _Site(weakref.ref(backbone), index)
        kv_heads, head_dim = first[1], first[2]
    _shapes[backbone] = PrefixShape(len(layers), int(kv_heads), int(head_dim))
    return _shapes[backbone]
