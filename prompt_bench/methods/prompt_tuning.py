"""Prompt tuning (Lester et al., 2021): a shallow soft prompt trained by gradient descent, model frozen."""

import torch

from prompt_bench.methods.base import Method, Solution, WhiteBoxContext
from prompt_bench.methods.training import train
from prompt_bench.prompts.soft import check_init, initial_prompt
from prompt_bench.prompts.task_specific import task_prompt_logits


class TaskPromptSolution(Solution):
    """`prompt` is the shared part; `tensors["task_prompts"]` [T, L_t, d] the tasks' own parts
    (setting=multitask, setting.prompt=shared+task)."""

    def scorer(self, backbone):
        shared, task_prompts = self.prompt, self.tensors["task_prompts"]
        return lambda batch: task_prompt_logits(backbone, batch, shared, task_prompts)


class PromptTuning(Method):
    access = "gradient"
    task_specific_prompts = True

    @classmethod
    def check(cls, cfg) -> None:
        check_init(str(cfg["init"]), int(cfg["n_prompt_tokens"]))

    def fit(self, ctx: WhiteBoxContext) -> Solution:
        cfg, backbone = ctx.method, ctx.backbone
        init = initial_prompt(str(cfg["init"]), cfg.n_prompt_tokens, backbone.word_embeddings.weight, ctx.seed)
        # The prompt stays fp32 even on a bf16 model (the backbone casts it per forward), so Adam's
        # small updates are not rounded away.
        prompt = init.to(device=backbone.device, dtype=torch.float32).requires_grad_(True)
        params = {"prompt": prompt}
        scorer = lambda batch: backbone.label_logits(batch, prompt.unsqueeze(0))[0]  # noqa: E731
        if ctx.task_tokens:
            # Each task's own part starts from vocabulary words too (whatever the shared init), drawn per task.
            own = [initial_prompt("vocab", ctx.task_tokens, backbone.word_embeddings.weight, ctx.seed + 1 + t)
                   for t in range(ctx.n_tasks)]
            task_prompts = torch.stack(own).to(device=backbone.device, dtype=torch.float32).requires_grad_(True)
            params["task_prompts"] = task_prompts
            scorer = lambda batch: task_prompt_logits(backbone, batch, prompt, task_prompts)  # noqa: E731
        best, summary = train(ctx, params, scorer, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                              eval_every=cfg.eval_every)
        meta = {**summary, "init": str(cfg["init"])}
        if ctx.task_tokens:
            return TaskPromptSolution(prompt=best["prompt"], tensors={"task_prompts": best["task_prompts"]},
                                      meta={**meta, "task_tokens": ctx.task_tokens}, budget_used=summary["steps"])
        return Solution(prompt=best["prompt"], meta=meta, budget_used=summary["steps"])


METHOD = PromptTuning
