"""Prompt tuning (Lester et al., 2021): a shallow soft prompt trained by gradient descent, model frozen."""

import torch

from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import FitContext, Method, Solution
from prompt_bench.methods.training import train
from prompt_bench.prompts.soft import initial_prompt


class PromptTuning(Method):
    access = "gradient"

    @classmethod
    def check(cls, cfg) -> None:
        for key in ("n_prompt_tokens", "max_steps", "batch_size", "eval_every"):
            if int(cfg[key]) <= 0:
                raise ConfigError(f"method.{key} must be positive, got {cfg[key]}")

    def fit(self, ctx: FitContext) -> Solution:
        cfg, backbone = ctx.method, ctx.backbone
        init = initial_prompt(str(cfg["init"]), int(cfg["n_prompt_tokens"]), backbone.word_embeddings.weight, ctx.seed)
        # The prompt stays fp32 even on a bf16 model (the backbone casts it per forward), so Adam's
        # small updates are not rounded away.
        prompt = init.to(device=backbone.device, dtype=torch.float32).requires_grad_(True)
        best, summary = train(
            ctx,
            {"prompt": prompt},
            lambda batch: backbone.label_logits(batch, prompt.unsqueeze(0))[0],
            max_steps=int(cfg["max_steps"]),
            batch_size=int(cfg["batch_size"]),
            eval_every=int(cfg["eval_every"]),
        )
        return Solution(prompt=best["prompt"], meta={**summary, "init": str(cfg["init"])}, budget_used=summary["steps"])


METHOD = PromptTuning
