"""Dynamic Prompting (Yang et al. 2023): a soft prompt whose position, length and representation are chosen
per task or per instance by small networks over the input's pooled representation, trained end-to-end with
the prompt (hard Gumbel-Softmax, annealed temperature), model frozen.

`method.base=shallow` works on an input soft prompt (prompt tuning); `method.base=deep` on P-tuning v2's
per-layer key/value prefixes, where length and representation apply to the prefixes (position has no
meaning for attention prefixes, which carry no position, so it must be off there).
"""

from __future__ import annotations

import torch
from torch import Tensor

from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import Method, Solution, WhiteBoxContext
from prompt_bench.methods.training import train
from prompt_bench.models.backbone import Backbone, EncodedBatch
from prompt_bench.models.prefixes import PREFIX, PREFIX_MASK, enable_prefixes
from prompt_bench.prompts.dynamic import MODES, POOL_SELECTORS, DynamicPrompt, arrange, temperature
from prompt_bench.prompts.prefix import PrefixEncoder, linear_head, saved_head
from prompt_bench.prompts.soft import check_init, initial_prompt

BASES = ("shallow", "deep")
HEADS = ("verbalizer", "linear")


class PooledCache:
    """The frozen model's pooled representation of each input, computed once: the selectors read it at
    every step and every evaluation, and it never changes."""

    def __init__(self, backbone: Backbone):
        self.backbone, self.store = backbone, {}

    def __call__(self, batch: EncodedBatch) -> Tensor:
        ids, masks = batch.input_ids.cpu(), batch.attention_mask.cpu().bool()  # one transfer, not one per row
        keys = [row[mask].numpy().tobytes() for row, mask in zip(ids, masks)]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            sub = EncodedBatch(batch.input_ids[missing], batch.attention_mask[missing], batch.target_pos[missing],
                               batch.labels[missing])
            model = self.backbone.model
            was_training = model.training
            model.eval()  # the stored representation is the model's own, without dropout (method.model_dropout)
            try:
                for i, vector in zip(missing, self.backbone.pooled(sub)):
                    self.store[keys[i]] = vector
            finally:
                model.train(was_training)
        return torch.stack([self.store[k] for k in keys])


def dynamic_scorer(backbone: Backbone, dynamic: DynamicPrompt, base: str, head, pooled: PooledCache, tau_at):
    """(batch, step|None) -> [B, C] logits. With a step (training) position and length are sampled with hard
    Gumbel-Softmax at temperature tau_at(step); without one (evaluation) they are the argmax."""

    def score(batch: EncodedBatch, step: int | None = None) -> Tensor:
        choices = dynamic(pooled(batch), tau_at(step) if step is not None else 1.0, sample=step is not None)
        embeds = backbone.word_embeddings(batch.input_ids)
        if base == "deep":
            kept = choices.kept()  # [B, L]
            prefix = (choices.prompts * kept[:, :, None, None, None]).permute(0, 2, 3, 1, 4)  # [B, layers, 2, L, kv]
            extras = {PREFIX: prefix, PREFIX_MASK: kept.detach() > 0.5}
            return batch.mask_logits(backbone.row_logits(embeds, batch.attention_mask, batch.target_pos, None, extras,
                                                         verbalizer=batch.verbalizer, head=head))
        arranged, mask, target, prompt_mask = arrange(embeds, batch.attention_mask, batch.target_pos, choices,
                                                      backbone.prompt_offset)
        return batch.mask_logits(backbone.row_logits(arranged, mask, target, prompt_mask,
                                                     verbalizer=batch.verbalizer, head=head))

    return score


class DynamicPromptSolution(Solution):
    """Rebuilds the selectors and pool from `tensors` and scores each instance with its own choices."""

    def scorer(self, backbone: Backbone):
        meta = self.meta
        if meta["base"] == "deep":
            enable_prefixes(backbone)
        pool = self.tensors["dynamic.pool"]
        dynamic = DynamicPrompt(pool, backbone.hidden_size, *meta["modes"],
                                pool_selector=meta.get("pool_selector", "linear")).to(backbone.device)
        dynamic.load_state_dict({k[len("dynamic."):]: v for k, v in self.tensors.items() if k.startswith("dynamic.")})
        head = saved_head(self.tensors, backbone.device)
        # without a step the scorer evaluates (argmax choices), so the temperature is never read
        return dynamic_scorer(backbone, dynamic, meta["base"], head, PooledCache(backbone), lambda step: 1.0)


class DynamicPrompting(Method):
    access = "gradient"

    @classmethod
    def restore(cls, tensors, meta, method_cfg) -> Solution:
        return DynamicPromptSolution(prompt=None, tensors=tensors, meta=meta)

    @classmethod
    def check(cls, cfg) -> None:
        check_init(str(cfg["init"]), int(cfg["n_prompt_tokens"]))
        for key in ("position", "length", "representation"):
            if cfg["dp"][key] not in MODES:
                raise ConfigError(f"method.dp.{key}={cfg['dp'][key]} is not one of {', '.join(MODES)}")
        if cfg["dp"]["pool_selector"] not in POOL_SELECTORS:
            raise ConfigError(f"method.dp.pool_selector={cfg['dp']['pool_selector']} is not one of "
                              f"{', '.join(POOL_SELECTORS)}")
        if int(cfg["temperature"]["every"]) <= 0:
            raise ConfigError(f"method.temperature.every must be positive, got {cfg['temperature']['every']}")
        if cfg["base"] not in BASES:
            raise ConfigError(f"method.base={cfg['base']} is not one of {', '.join(BASES)}")
        if cfg["head"] not in HEADS:
            raise ConfigError(f"method.head={cfg['head']} is not one of {', '.join(HEADS)}")
        if cfg["base"] == "deep" and cfg["dp"]["position"] != "off":
            raise ConfigError("method.base=deep puts the prompt in every layer's attention keys, which have no position: "
                              "set method.dp.position=off (or method.base=shallow)")
        tau = cfg["temperature"]
        if not 0 < float(tau["floor"]) <= float(tau["start"]) or float(tau["rate"]) < 0:
            raise ConfigError("method.temperature needs 0 < floor <= start and rate >= 0")

    @classmethod
    def prompt_length(cls, cfg) -> int:
        return int(cfg["n_prompt_tokens"]) if cfg["base"] == "shallow" else 0

    def fit(self, ctx: WhiteBoxContext) -> Solution:
        cfg, backbone = ctx.method, ctx.backbone
        torch.manual_seed(ctx.seed)
        n_tokens, pool_size = cfg.n_prompt_tokens, cfg.pool_size
        if cfg["base"] == "deep":
            shape = enable_prefixes(backbone)
            # each pool member starts as its own P-tuning v2 prefix table, in [L, n_layers, 2, kv] layout
            pool = torch.stack([PrefixEncoder(shape, n_tokens, backbone.hidden_size, seed=ctx.seed + k)().permute(2, 0, 1, 3)
                                for k in range(pool_size)]).detach()
        else:
            # Lester's vocabulary init, a different draw per pool member
            pool = torch.stack([initial_prompt(str(cfg["init"]), n_tokens, backbone.word_embeddings.weight, ctx.seed + k)
                                for k in range(pool_size)])
        dp = cfg["dp"]
        modes = (str(dp["position"]), str(dp["length"]), str(dp["representation"]))
        # parameters stay fp32 on a bf16 model, so Adam's small updates are not rounded away
        dynamic = DynamicPrompt(pool.float(), backbone.hidden_size, *modes,
                                pool_selector=str(dp["pool_selector"])).to(backbone.device)
        head = linear_head(backbone.hidden_size, ctx.task.num_classes, ctx.seed).to(backbone.device) if cfg["head"] == "linear" else None
        params = {f"dynamic.{n}": p for n, p in dynamic.named_parameters()}
        if head is not None:
            params.update({f"head.{n}": p for n, p in head.named_parameters()})
        tau = cfg["temperature"]
        every = int(tau["every"])  # DPT anneals once per accumulation round of 4 optimizer steps
        tau_at = lambda step: temperature(step // every, float(tau["start"]), float(tau["floor"]), float(tau["rate"]))  # noqa: E731
        score = dynamic_scorer(backbone, dynamic, str(cfg["base"]), head, PooledCache(backbone), tau_at)
        best, summary = train(ctx, params, score, max_steps=cfg.max_steps,
                              batch_size=cfg.batch_size, eval_every=cfg.eval_every,
                              train_scorer=score)
        tensors = {name: value.detach().float().cpu() for name, value in best.items()}
        meta = {**summary, "base": cfg["base"], "modes": list(modes), "pool_selector": str(dp["pool_selector"]),
                "n_prompt_tokens": n_tokens,
                "pool_size": int(dynamic.pool.shape[0]), "final_temperature": tau_at(summary["steps"])}
        return DynamicPromptSolution(prompt=None, tensors=tensors, meta=meta, budget_used=summary["steps"])


METHOD = DynamicPrompting
