"""P-tuning v2 (Liu et al., 2021/ACL 2022): trainable key/value prefixes at every layer of a frozen model,
optionally reparameterised by an MLP, with a linear classification head (its default) or the task's
verbalizer. Best-on-dev parameters are kept, as for every gradient method here.

`method.head=reference` is THUDM/P-tuning-v2's own head (model/sequence_classification.py): the task's plain text
(no template), the frozen [CLS] pooler, dropout, a linear classifier. `method.dropout` is the reference's
hidden_dropout_prob on the prefix (a fresh mask per example, as the reference drops out its batch-expanded
past_key_values) and before the classifier; `method.model_dropout` runs the frozen model's own dropout in training
steps, as the reference trains with the model in train mode.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import Method, Solution, WhiteBoxContext
from prompt_bench.methods.training import train
from prompt_bench.models.backbone import Backbone
from prompt_bench.models.pooler import pooler_weights
from prompt_bench.models.prefixes import PREFIX, enable_prefixes
from prompt_bench.prompts.prefix import PrefixEncoder, linear_head, saved_head

HEADS = ("linear", "verbalizer", "reference")


class PrefixSolution(Solution):
    """Scores with the learned prefixes (tensors["prefix"]: [n_layers, 2, L, kv_dim]) and head, if any."""

    def scorer(self, backbone: Backbone):
        enable_prefixes(backbone)
        prefix = self.tensors["prefix"].to(backbone.device)
        return prefix_scorer(backbone, lambda: prefix, saved_head(self.tensors, backbone.device))


def prefix_scorer(backbone: Backbone, prefix, head, dropout: torch.nn.Dropout | None = None):
    """batch -> [B, C] logits under the prefix `prefix()` ([n_layers, 2, L, kv_dim]) and `head`. While `dropout`
    is in train mode (training steps) each example gets its own dropout mask on the prefix."""
    no_prompt = torch.zeros(1, 0, backbone.hidden_size, device=backbone.device)

    def score(batch) -> Tensor:
        if dropout is not None and dropout.training and dropout.p > 0:
            rows = dropout(prefix()[None].expand(len(batch), -1, -1, -1, -1))
            embeds = backbone.word_embeddings(batch.input_ids)
            return batch.mask_logits(backbone.row_logits(embeds, batch.attention_mask, batch.target_pos, None,
                                                         {PREFIX: rows}, verbalizer=batch.verbalizer, head=head))
        return backbone.label_logits(batch, no_prompt, {PREFIX: prefix()[None]}, head=head)[0]

    return score


class PTuningV2(Method):
    access = "gradient"

    @classmethod
    def restore(cls, tensors, meta, method_cfg) -> Solution:
        return PrefixSolution(prompt=None, tensors=tensors, meta=meta)

    @classmethod
    def check(cls, cfg) -> None:
        if cfg["head"] not in HEADS:
            raise ConfigError(f"method.head={cfg['head']} is not one of {', '.join(HEADS)}")
        if not float(cfg["prefix_init_std"]) > 0:
            raise ConfigError(f"method.prefix_init_std must be positive, got {cfg['prefix_init_std']}")

    @classmethod
    def reads_plain_input(cls, cfg) -> bool:
        return cfg["head"] == "reference"

    @classmethod
    def prompt_length(cls, cfg) -> int:
        return 0  # prefixes live in the attention keys, not in the token sequence, so need no positions

    def fit(self, ctx: WhiteBoxContext) -> Solution:
        cfg, backbone = ctx.method, ctx.backbone
        torch.manual_seed(ctx.seed)
        shape = enable_prefixes(backbone)
        encoder = PrefixEncoder(shape, cfg.n_prompt_tokens, backbone.hidden_size,
                                cfg.prefix_projection, cfg.prefix_hidden_size, ctx.seed,
                                cfg.prefix_init_std).to(backbone.device)
        drop = cfg.dropout
        head, pooled_from = None, None
        if cfg["head"] == "reference" and backbone.family in ("masked_lm", "sentence_encoder"):
            weight, bias, pooled_from = pooler_weights(backbone, ctx.seed)
            head = linear_head(backbone.hidden_size, ctx.task.num_classes, ctx.seed, drop, (weight, bias))
        elif cfg["head"] in ("linear", "reference"):  # decoders have no [CLS]: the family's readout, as linear
            head = linear_head(backbone.hidden_size, ctx.task.num_classes, ctx.seed, drop)
        head = head.to(backbone.device) if head is not None else None
        prefix_dropout = torch.nn.Dropout(drop)
        params = {f"prefix.{n}": p for n, p in encoder.named_parameters()}
        if head is not None:
            params.update({f"head.{n}": p for n, p in head.named_parameters()})
        modules = [prefix_dropout] + ([head] if head is not None else [])
        best, summary = train(ctx, params, prefix_scorer(backbone, encoder, head, prefix_dropout),
                              max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                              eval_every=cfg.eval_every, train_modules=modules)
        with torch.no_grad():
            for name, value in params.items():
                value.copy_(best[name])
            tensors = {"prefix": encoder().detach().float().cpu(),
                       **{k: v.detach().cpu() for k, v in best.items() if k.startswith("head.")}}
            if head is not None and head.reads == "first_token":
                tensors.update({"head.pooler_weight": head.pooler_weight.detach().float().cpu(),
                                "head.pooler_bias": head.pooler_bias.detach().float().cpu()})
        meta = {**summary, "prefix_shape": list(tensors["prefix"].shape), "head": cfg["head"],
                "prefix_projection": cfg.prefix_projection, "dropout": drop,
                "model_dropout": bool(cfg.get("model_dropout")), **({"pooler": pooled_from} if pooled_from else {})}
        return PrefixSolution(prompt=None, tensors=tensors, meta=meta, budget_used=summary["steps"])


METHOD = PTuningV2
