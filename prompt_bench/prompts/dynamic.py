"""Dynamic Prompting (Yang et al. 2023, arXiv 2303.02909): where the soft prompt sits, how many of its tokens
are used, and what it is, each chosen per task or per instance.

- position: a split point j in 0..L. Tokens j..L-1 go before the input (where a static prompt sits) and
  tokens 0..j-1 after the input's text (before its closing token), as Xianjun-Yang/DPT arranges them.
- length: l in 0..L; tokens l..L-1 are dropped (hidden from attention).
- representation: a mixture over a pool of K prompts (softmax weights).

Each is `off` (static: all before, full length, one prompt), `task` (one learned choice for the task) or
`instance` (a linear layer over the input's pooled representation; DPT's Linear + ReLU for position and
length, Linear + softmax for the pool as in DPT's soft_ins_vec_pos_adaptive.py, or with `pool_selector=linear_tanh`
Linear + Tanh + softmax as in its soft_ins_vec_adaptive.py). Position and length are categorical and trained with hard
Gumbel-Softmax (straight-through) at an annealed temperature; evaluation takes the argmax, so it is
deterministic (DPT samples at evaluation too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODES = ("off", "task", "instance")
POOL_SELECTORS = ("linear", "linear_tanh")


def temperature(step: int, start: float, floor: float, rate: float) -> float:
    """DPT's schedule: tau_t = max(floor, tau_{t-1} * exp(-rate * t)), i.e. start * exp(-rate * t(t+1)/2)."""
    return max(floor, start * math.exp(-rate * step * (step + 1) / 2))


class _Choice(nn.Module):
    """Logits over `n` options: fixed (off), one learned vector (task), or a layer over pooled inputs (instance)."""

    def __init__(self, mode: str, d_model: int, n: int, activation: str):
        super().__init__()
        self.mode, self.n = mode, n
        if mode == "task":
            self.logits = nn.Parameter(torch.zeros(n))
        elif mode == "instance":
            self.layer = nn.Linear(d_model, n)
        self.activation = activation

    def forward(self, pooled: Tensor) -> Tensor:
        if self.mode == "task":
            return self.logits.expand(pooled.shape[0], -1)
        out = self.layer(pooled)
        if self.activation == "relu":
            return F.relu(out)
        return torch.tanh(out) if self.activation == "tanh" else out


def _pick(logits: Tensor, tau: float, sample: bool) -> Tensor:
    """One-hot [B, n]: hard Gumbel-Softmax (straight-through gradients) when sampling, else the argmax."""
    if sample:
        return F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


@dataclass
class Choices:
    """Per-instance choices for a batch: prompts [B, L, ...], and one-hot split / length choices [B, L+1]."""

    prompts: Tensor
    split: Tensor
    length: Tensor

    def kept(self) -> Tensor:
        """[B, L] 1 where a token is within the chosen length (token t is kept when length > t); carries the
        length choice's straight-through gradient."""
        # kept[b, t] = sum_{l > t} length[b, l]
        return self.length.flip(-1).cumsum(-1).flip(-1)[:, 1:]


class DynamicPrompt(nn.Module):
    """The learnable part of Dynamic Prompting: a prompt pool and the three selectors."""

    def __init__(self, pool: Tensor, d_model: int, position: str, length: str, representation: str,
                 pool_selector: str = "linear"):
        super().__init__()
        if pool_selector not in POOL_SELECTORS:
            raise ValueError(f"dp.pool_selector={pool_selector} is not one of {', '.join(POOL_SELECTORS)}")
        for name, mode in (("position", position), ("length", length), ("representation", representation)):
            if mode not in MODES:
                raise ValueError(f"dp.{name}={mode} is not one of {', '.join(MODES)}")
        if representation == "off":
            pool = pool[:1]
        self.pool = nn.Parameter(pool.clone())  # [K, L, ...]: shallow [K, L, d] or deep [K, L, n_layers, 2, kv]
        self.n_tokens = pool.shape[1]
        self.modes = {"position": position, "length": length, "representation": representation}
        self.position = _Choice(position, d_model, self.n_tokens + 1, "relu") if position != "off" else None
        self.length = _Choice(length, d_model, self.n_tokens + 1, "relu") if length != "off" else None
        mixer_activation = "tanh" if pool_selector == "linear_tanh" else "none"
        self.mixer = _Choice(representation, d_model, pool.shape[0], mixer_activation) if representation != "off" else None

    def forward(self, pooled: Tensor, tau: float, sample: bool) -> Choices:
        batch, n = pooled.shape[0], self.n_tokens + 1
        pooled = pooled.to(self.pool.dtype)
        if self.mixer is None:
            prompts = self.pool[0].expand(batch, *self.pool.shape[1:])
        else:
            weights = torch.softmax(self.mixer(pooled), dim=-1)
            prompts = torch.einsum("bk,k...->b...", weights, self.pool)
        split = _pick(self.position(pooled), tau, sample) if self.position is not None \
            else F.one_hot(torch.zeros(batch, dtype=torch.long, device=pooled.device), n).to(pooled.dtype)
        length = _pick(self.length(pooled), tau, sample) if self.length is not None \
            else F.one_hot(torch.full((batch,), n - 1, device=pooled.device), n).to(pooled.dtype)
        return Choices(prompts, split, length)


def arrange(embeds: Tensor, mask: Tensor, target: Tensor, choices: Choices, offset: int):
    """Place each row's prompt around its input. Returns (embeds [B, T+L, d], mask, target, prompt_mask).

    Rows are right-padded inputs with real length n_b; the "after" part goes before the input's last real
    token (its [SEP] / </s>, or a causal LM's last token, which stays last so the label is still read after it).
    The arrangement is a mixture of the L+1 split permutations weighted by the one-hot split choice, so the
    straight-through gradient reaches the position selector; the dropped tokens' embeddings are scaled by 0
    through `kept`, which carries the length selector's gradient, and are masked from attention.
    """
    batch, width, dim = embeds.shape
    n_tokens = choices.prompts.shape[1]
    device = embeds.device
    kept = choices.kept()  # [B, L]
    prompts = choices.prompts * kept.unsqueeze(-1)
    source = torch.cat([prompts.to(embeds.dtype), embeds], dim=1)  # [B, L + T, d]: prompt tokens, then input
    out_len = width + n_tokens
    end = mask.sum(1) - 1  # [B] index of each row's last real token: the "after" part goes before it
    splits = torch.arange(n_tokens + 1, device=device)
    t = torch.arange(out_len, device=device)
    index = _placement(t[None, None, :], splits[None, :, None], end[:, None, None], offset, n_tokens)  # [B, L+1, T+L]
    chosen = choices.split.detach().argmax(-1)  # [B]
    picked = index[torch.arange(batch, device=device), chosen]  # [B, T+L]
    if torch.is_grad_enabled() and choices.split.requires_grad:
        weights = torch.zeros(batch, out_len * (width + n_tokens), device=device, dtype=source.dtype)
        flat = (t[None, None, :] * (width + n_tokens) + index).reshape(batch, -1)
        src = choices.split.to(source.dtype)[:, :, None].expand(-1, -1, out_len).reshape(batch, -1)
        weights = weights.scatter_add(1, flat, src).view(batch, out_len, width + n_tokens)
        arranged = weights @ source
    else:  # no selector gradient to carry (evaluation, or position off): the same rows by a plain gather
        arranged = source.gather(1, picked.unsqueeze(-1).expand(-1, -1, dim))
    source_mask = torch.cat([(kept.detach() > 0.5).to(mask.dtype), mask], dim=1)
    new_mask = source_mask.gather(1, picked)
    prompt_mask = picked < n_tokens
    before = n_tokens - chosen
    new_target = torch.where(target < offset, target, torch.where(target < end, target + before, target + n_tokens))
    return arranged, new_mask, new_target, prompt_mask


def _placement(t: Tensor, split: Tensor, end: Tensor, offset: int, n_tokens: int) -> Tensor:
    """Source index (0..L-1 prompt token, L.. input token) of output position t for split j:
    input[:offset] + prompt[j:] + input[offset:end] + prompt[:j] + input[end:]."""
    before = n_tokens - split
    mid_stop = end + before
    after_stop = mid_stop + split
    return torch.where(
        t < offset, n_tokens + t,
        torch.where(t < offset + before, split + (t - offset),
                    torch.where(t < mid_stop, n_tokens + t - before,
                                torch.where(t < after_stop, t - mid_stop, n_tokens + t - n_tokens))))
