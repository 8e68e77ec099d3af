"""P-tuning v2 (Liu et al., 2021/ACL 2022): trainable key/value prefixes at every layer of a frozen model,
optionally reparameterised by an MLP, with a linear classification head (its default) or the task's
verbalizer. Best-on-dev parameters are kept, as for every gradient method here."""

from __future__ import annotations

import torch
from torch import Tensor

from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import FitContext, Method, Solution
from prompt_bench.methods.training import train
from prompt_bench.models.backbone import Backbone
from prompt_bench.models.prefixes import PREFIX, enable_prefixes
from prompt_bench.prompts.prefix import PrefixEncoder, linear_head, saved_head

HEADS = ("linear", "verbalizer")


class PrefixSolution(Solution):
    """Scores with the learned prefixes (tensors["prefix"]: [n_layers, 2, L, kv_dim]) and head, if any."""

    def scorer(self, backbone: Backbone):
        enable_prefixes(backbone)
        prefix = self.tensors["prefix"].to(backbone.device)
        return prefix_scorer(backbone, lambda: prefix, saved_head(self.tensors, backbone.device))


def prefix_scorer(backbone: Backbone, prefix, head):
    """batch -> [B, C] logits under the prefix `prefix()` ([n_layers, 2, L, kv_dim]) and `head`."""
    no_prompt = torch.zeros(1, 0, backbone.hidden_size, device=backbone.device)

    def score(batch) -> Tensor:
        with backbone.using_head(head):
            return backbone.label_logits(batch, no_prompt, {PREFIX: prefix()[None]})[0]

    return score


class PTuningV2(Method):
    access = "gradient"

    @classmethod
    def check(cls, cfg) -> None:
        for key in ("n_prompt_tokens", "max_steps", "batch_size", "eval_every", "prefix_hidden_size"):
            if int(cfg[key]) <= 0:
                raise ConfigError(f"method.{key} must be positive, got {cfg[key]}")
        if cfg["head"] not in HEADS:
            raise ConfigError(f"method.head={cfg['head']} is not one of {', '.join(HEADS)}")

    @classmethod
    def prompt_length(cls, cfg) -> int:
        return 0  # prefixes live in the attention keys, not in the token sequence, so need no positions

    def fit(self, ctx: FitContext) -> Solution:
        cfg, backbone = ctx.method, ctx.backbone
        torch.manual_seed(ctx.seed)
        shape = enable_prefixes(backbone)
        encoder = PrefixEncoder(shape, int(cfg["n_prompt_tokens"]), backbone.hidden_size,
                                bool(cfg["prefix_projection"]), int(cfg["prefix_hidden_size"]), ctx.seed).to(backbone.device)
        head = linear_head(backbone.hidden_size, ctx.task.num_classes, ctx.seed).to(backbone.device) if cfg["head"] == "linear" else None
        params = {f"prefix.{n}": p for n, p in encoder.named_parameters()}
        if head is not None:
            params.update({f"head.{n}": p for n, p in head.named_parameters()})
        best, summary = train(ctx, params, prefix_scorer(backbone, encoder, head), max_steps=int(cfg["max_steps"]),
                              batch_size=int(cfg["batch_size"]), eval_every=int(cfg["eval_every"]))
        with torch.no_grad():
            for name, value in params.items():
                value.copy_(best[name])
            tensors = {"prefix": encoder().detach().float().cpu(),
                       **{k: v.detach().cpu() for k, v in best.items() if k.startswith("head.")}}
        meta = {**summary, "prefix_shape": list(tensors["prefix"].shape), "head": cfg["head"],
                "prefix_projection": bool(cfg["prefix_projection"])}
        return PrefixSolution(prompt=None, tensors=tensors, meta=meta, budget_used=summary["steps"])


METHOD = PTuningV2
