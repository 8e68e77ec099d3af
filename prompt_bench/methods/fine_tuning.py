"""Prompt-based fine-tuning of every weight (LM-BFF style): the task's template and verbalizer, no soft prompt."""

import torch

from prompt_bench.errors import PromptBenchError
from prompt_bench.methods.base import Method, Solution, WhiteBoxContext
from prompt_bench.methods.training import train


class FineTuning(Method):
    access = "gradient"

    @classmethod
    def check(cls, cfg) -> None:
        """Its sizes are config_schema's to check (types and ranges from conf/): nothing else to refuse."""

    @classmethod
    def restore(cls, tensors, meta, method_cfg) -> Solution:
        raise PromptBenchError("method=fine_tuning keeps no model weights in its run folder: nothing to score with")

    def fit(self, ctx: WhiteBoxContext) -> Solution:
        backbone = ctx.backbone
        model = backbone.model
        params = {name: p for name, p in model.named_parameters()}
        model.requires_grad_(True)
        model.train()
        best, summary = train(
            ctx,
            params,
            lambda batch: backbone.label_logits(batch, None)[0],
            max_steps=ctx.method.max_steps,
            batch_size=ctx.method.batch_size,
            eval_every=ctx.method.eval_every,
        )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(best[name])
        model.requires_grad_(False)
        model.eval()
        if ctx.method.get("save_model") and ctx.files.run_dir is not None:
            # A loadable folder (model=local model.path=<run>/model), written as safetensors.
            model.save_pretrained(ctx.files.run_dir / "model")
            backbone.tokenizer.save_pretrained(ctx.files.run_dir / "model")
            summary["model_dir"] = str(ctx.files.run_dir / "model")
        return Solution(prompt=None, meta=summary, budget_used=summary["steps"])


METHOD = FineTuning
