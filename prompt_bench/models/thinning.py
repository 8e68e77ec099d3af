"""Clip-Tuning's "thinned" networks: the same frozen model under N fixed, seeded dropout ("clipping") masks.

A thinned network k drops the same units at every call for the whole run (stationary dropout) and scales the
survivors by 1 / (1 - p), as inverted dropout does. All N networks and all P candidate prompts go through the
model together: `thinned_logits` repeats each prompt once per network (N x P "virtual prompts", network-major)
and passes `extras={"network": ids}` to `Backbone.label_logits`, so the hooks installed here read, per row,
which network the row belongs to (`current_rows(backbone).extras["network"]`) and apply that network's mask.

Sites (`ThinnedSpec.sites`):

* ``hidden``: the hidden states at the model's dropout sites, i.e. the outputs of its ``nn.Dropout`` modules
  that act on [rows, T, d] hidden states (BERT/RoBERTa/MiniLM: embeddings and both residual branches of every
  layer; GPT-2: embeddings, attention and MLP outputs; T5: the same in encoder and decoder). Modules are called
  in eval mode too, where they are the identity, so a forward hook can clip their output. One mask per
  (network, site) over the feature dimension: network k drops the same hidden units at every position.
  Models without dropout modules (the Llama family, SmolLM2) get the same treatment at the outputs of each
  block's ``self_attn`` and ``mlp`` (the residual branches, where BERT and GPT-2 put their hidden dropout);
  a model with neither is refused with a ConfigError.
* ``attention``: the attention probabilities, through an eager attention function registered with
  transformers' ``AttentionInterface`` and switched on (``set_attn_implementation``) only for the forward,
  the model's own implementation restored afterwards. The mask of network k depends only on (network,
  attention module, head, query position, key position) and is computed by a counter-based hash of those
  indices, so it exists for any sequence length and is the same whatever the batch (the masks of the lengths
  in use are kept in a small LRU cache, hashing costing more than applying them).
* ``both``: both of the above (what dropout itself clips in BERT/RoBERTa).

Masks come from a stateless integer hash of (seed, network, site, unit...), never from a random generator's
stream, so network k's mask does not depend on the order, chunking or batching of forwards.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from prompt_bench.errors import ConfigError, ModelError
from prompt_bench.models.backbone import Backbone, EncodedBatch, current_rows

SITES = ("hidden", "attention", "both")
#: the name our clipped eager attention is registered under in transformers' Attention(Mask)Interface
ATTENTION_IMPLEMENTATION = "prompt_bench_thinned"

_M32 = 0xFFFFFFFF
_HIDDEN, _ATTENTION = 1, 2  # site kinds, hashed into every mask so the two never share bits


@dataclass(frozen=True)
class ThinnedSpec:
    """Which thinned networks to score on: N masks at rate p on the given sites, derived from `seed`."""

    n_networks: int
    clip_rate: float
    sites: str = "both"
    seed: int = 0

    def __post_init__(self):
        if int(self.n_networks) < 1:
            raise ConfigError(f"method.n_networks must be a positive number of thinned networks, got {self.n_networks}")
        if not 0.0 <= float(self.clip_rate) < 1.0:
            raise ConfigError(f"method.clip_rate must be in [0, 1), got {self.clip_rate}")
        if self.sites not in SITES:
            raise ConfigError(f"method.sites={self.sites} is unknown: use one of {', '.join(SITES)}")

    @property
    def hidden(self) -> bool:
        return self.sites in ("hidden", "both")

    @property
    def attention(self) -> bool:
        return self.sites in ("attention", "both")


# -- stateless masks ----------------------------------------------------------------------------------------
def _mix(x: Tensor) -> Tensor:
    """A 32-bit integer finalizer on int64 tensors holding values in [0, 2^32). Multipliers stay below 2^31 so
    no product leaves int64."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M32
    x = x ^ (x >> 16)
    x = (x * 0x297A2D39) & _M32
    return x ^ (x >> 15)


def _hash(*parts, device=None) -> Tensor:
    """Hash of a sequence of broadcastable integer tensors (or ints), combined in order."""
    h = torch.tensor(0x811C9DC5, dtype=torch.int64, device=device)
    for part in parts:
        part = torch.as_tensor(part, dtype=torch.int64, device=device) & _M32
        h = _mix(((h * 0x01000193) & _M32) ^ part)
    return h


def keep_mask(p: float, *parts, device=None) -> Tensor:
    """Whether each unit indexed by `parts` (broadcast together) survives: a Bernoulli(1 - p) draw that is a
    pure function of the indices."""
    return _hash(*parts, device=device).to(torch.float64) / 2.0**32 >= p


# -- the clipped attention function ----------------------------------------------------------------------------
#: the installation whose thinned forward is running: a ContextVar set and reset by `_Thinning.installed`, as
#: `backbone.rows_scope` explains (the attention function is called by the model, so it must look it up)
_ACTIVE: ContextVar["_Thinning | None"] = ContextVar("prompt_bench_thinning", default=None)


def _thinned_attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                       scaling: float | None = None, dropout: float = 0.0, position_bias: Tensor | None = None,
                       softcap: float | None = None, sinks: Tensor | None = None, **kwargs):
    """Eager attention whose softmaxed probabilities are multiplied by each row's network mask."""
    thinning = _ACTIVE.get()
    if thinning is None:
        raise RuntimeError(f"the {ATTENTION_IMPLEMENTATION} attention runs only inside a thinned forward")
    if softcap or sinks is not None:
        raise ModelError(f"{type(module).__name__} uses attention softcapping/sinks, which thinned attention does not "
                         "implement: use method.sites=hidden")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention (Llama family)
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if position_bias is not None:  # T5's relative position bias
        weights = weights + position_bias
    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask
    probs = torch.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = thinning.clip_attention(module, probs)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION_IMPLEMENTATION, _thinned_attention)
    AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, eager_mask)  # additive float masks, as eager gets


_KEEP_CACHE: "OrderedDict[tuple, Tensor]" = OrderedDict()
_KEEP_CACHE_SIZE = 256


def _attention_keep(seed: int, p: float, n_networks: int, module: int, heads: int, length: int, device) -> Tensor:
    """Bool keep mask [N, heads, S, S] of one attention module, S >= length. The masks are a pure function of
    their indices, so the mask for a shorter sequence is a slice of a longer one: masks are computed for
    lengths rounded up to a multiple of 64 and kept (LRU) across forwards, hashing being slower than applying."""
    size = -(-length // 64) * 64
    key = (seed, p, n_networks, module, heads, size, str(device))
    if key in _KEEP_CACHE:
        _KEEP_CACHE.move_to_end(key)
        return _KEEP_CACHE[key]
    positions = torch.arange(size, device=device)
    keep = keep_mask(p, seed, torch.arange(n_networks, device=device)[:, None, None, None], _ATTENTION, module,
                     torch.arange(heads, device=device)[None, :, None, None], positions[None, None, :, None],
                     positions[None, None, None, :], device=device)
    _KEEP_CACHE[key] = keep
    while len(_KEEP_CACHE) > _KEEP_CACHE_SIZE:
        _KEEP_CACHE.popitem(last=False)
    return keep


def _clip_rows(tensor: Tensor, keep: Tensor, networks: Tensor, p: float) -> Tensor:
    """tensor [rows, ...] with row r multiplied by keep[networks[r]] / (1 - p) (keep [N, ...] broadcasts against
    one row). Rows come in runs of one network (a virtual prompt's examples): with runs of equal length the
    mask is broadcast per run rather than gathered per row."""
    runs, counts = torch.unique_consecutive(networks, return_counts=True)
    scale = keep[runs].to(tensor.dtype) / (1.0 - p)
    if bool((counts == counts[0]).all()):
        grouped = tensor.reshape(len(runs), int(counts[0]), *tensor.shape[1:])
        return (grouped * scale.unsqueeze(1)).reshape(tensor.shape)
    return tensor * scale.repeat_interleave(counts, dim=0)


# -- installing the masks for one forward ------------------------------------------------------------------------
def hidden_sites(backbone: Backbone) -> list[nn.Module]:
    """Modules whose [rows, T, d] outputs the hidden masks clip (see the module docstring)."""
    dropouts = [m for m in backbone.model.modules() if isinstance(m, nn.Dropout)]
    if dropouts:
        return dropouts
    branches = []
    for block in backbone.transformer_layers():
        branches += [getattr(block, name) for name in ("self_attn", "mlp")
                     if isinstance(getattr(block, name, None), nn.Module)]
    if not branches:
        raise ConfigError(f"{backbone.spec.name} has no dropout modules and no self_attn/mlp branches to clip: "
                          "use method.sites=attention")
    return branches


class _Thinning:
    """Hooks (and the attention implementation) that clip each row with its network's masks during a forward."""

    def __init__(self, backbone: Backbone, spec: ThinnedSpec):
        self.backbone, self.spec = backbone, spec
        self.p = float(spec.clip_rate)
        self.seed = int(spec.seed) & _M32
        self._hidden_cache: dict[tuple, Tensor] = {}
        self._module_index: dict[int, int] = {}
        self.hidden_calls = self.attention_calls = 0

    def _networks(self, n_rows: int) -> Tensor:
        context = current_rows(self.backbone)
        if context is None or "network" not in context.extras:
            raise RuntimeError("a thinned forward needs label_logits(..., extras={'network': ids})")
        ids = context.extras["network"]
        if ids.shape[0] != n_rows:
            raise RuntimeError(f"{n_rows} rows reached a clipped site but the forward has {ids.shape[0]} network ids")
        return ids

    # hidden states: one mask per (network, site) over the feature dimension
    def _hidden_hook(self, site: int):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if not torch.is_tensor(hidden) or hidden.dim() != 3:
                return None  # not a [rows, T, d] hidden state (e.g. attention probabilities): left alone
            width, device = hidden.shape[-1], hidden.device
            cache_key = (site, width, str(device))
            if cache_key not in self._hidden_cache:
                networks = torch.arange(self.spec.n_networks, device=device)
                units = torch.arange(width, device=device)[None, None]
                self._hidden_cache[cache_key] = keep_mask(  # [N, 1, d]: the same units at every position
                    self.p, self.seed, networks[:, None, None], _HIDDEN, site, units, device=device)
            self.hidden_calls += 1
            clipped = _clip_rows(hidden, self._hidden_cache[cache_key], self._networks(hidden.shape[0]), self.p)
            return (clipped, *output[1:]) if isinstance(output, tuple) else clipped
        return hook

    # attention probabilities: a mask per (network, attention module, head, query position, key position)
    def clip_attention(self, module: nn.Module, probs: Tensor) -> Tensor:
        rows, heads, n_query, n_key = probs.shape
        keep = _attention_keep(self.seed, self.p, self.spec.n_networks, self._module_index[id(module)], heads,
                               max(n_query, n_key), probs.device)[:, :, :n_query, :n_key]
        self.attention_calls += 1
        return _clip_rows(probs, keep, self._networks(rows), self.p)

    @contextlib.contextmanager
    def installed(self):
        model = self.backbone.model
        handles, original, token = [], None, None
        try:
            if self.spec.hidden:
                for site, module in enumerate(hidden_sites(self.backbone)):
                    handles.append(module.register_forward_hook(self._hidden_hook(site)))
            if self.spec.attention:
                _register_attention()
                self._module_index = {id(m): i for i, m in enumerate(model.modules())}
                original = model.config._attn_implementation
                model.set_attn_implementation(ATTENTION_IMPLEMENTATION)
                if model.config._attn_implementation != ATTENTION_IMPLEMENTATION:
                    raise ConfigError(f"{self.backbone.spec.name} cannot switch its attention implementation, so its "
                                      "attention probabilities cannot be clipped: use method.sites=hidden")
            token = _ACTIVE.set(self)
            yield self
        finally:
            if token is not None:
                _ACTIVE.reset(token)
            for handle in handles:
                handle.remove()
            if original is not None:
                model.set_attn_implementation(original)


@torch.no_grad()
def thinned_logits(backbone: Backbone, batch: EncodedBatch, prompts: Tensor, spec: ThinnedSpec,
                   networks: Sequence[int] | None = None) -> Tensor:
    """Class logits [N, P, B, C] of P prompts [P, L, d] on each of the N thinned networks (or on the listed
    `networks` only), all in shared population-batched forwards."""
    ids = torch.arange(spec.n_networks) if networks is None else torch.as_tensor(list(networks), dtype=torch.int64)
    if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= spec.n_networks:
        raise ValueError(f"networks must be among 0..{spec.n_networks - 1}, got {ids.tolist()}")
    n_prompts = prompts.shape[0]
    virtual = prompts.repeat(len(ids), 1, 1)  # row j * P + i: candidate i on network ids[j]
    rows = ids.to(backbone.device).repeat_interleave(n_prompts)
    thinning = _Thinning(backbone, spec)
    with thinning.installed():
        logits = backbone.label_logits(batch, virtual, extras={"network": rows})
    if spec.hidden and thinning.hidden_calls == 0:
        raise ModelError(f"no hidden-state site of {backbone.spec.name} was reached in a forward: "
                         "use method.sites=attention")
    if spec.attention and thinning.attention_calls == 0:
        raise ModelError(f"{backbone.spec.name} does not route attention through transformers' AttentionInterface: "
                         "use method.sites=hidden")
    return logits.view(len(ids), n_prompts, *logits.shape[1:])


def ensemble_logits(logits: Tensor) -> Tensor:
    """Log of the thinned networks' averaged class probabilities: [N, ..., C] -> [..., C] (usable as logits)."""
    probs = torch.softmax(logits.float(), dim=-1).mean(0)
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
