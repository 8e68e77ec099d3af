"""The gradient-descent loop shared by white-box methods: seeded mini-batches, periodic dev evaluation,
best-on-dev selection (the LM-BFF / BBT protocol), the optimizer config's learning-rate schedule and gradient
clipping, optional dropout during training steps, and checkpoints that resume to the same result."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from prompt_bench import progress
from prompt_bench.methods.base import WhiteBoxContext
from prompt_bench.methods.selection import BestOnDev
from prompt_bench.models.backbone import EncodedBatch
from prompt_bench.optim import torch_optim

Scorer = Callable[[EncodedBatch], Tensor]


def _batch_order(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the mini-batch at `step`: epochs are seeded permutations, so any step can be re-derived."""
    per_epoch = max(1, -(-n // batch_size))
    epoch, offset = divmod(step, per_epoch)
    order = np.random.RandomState(seed * 100003 + epoch).permutation(n)
    return [int(i) for i in order[offset * batch_size : (offset + 1) * batch_size]]


def train(
    ctx: WhiteBoxContext,
    params: dict[str, Tensor],
    scorer: Scorer,
    max_steps: int,
    batch_size: int,
    eval_every: int,
    train_scorer: Callable[[EncodedBatch, int], Tensor] | None = None,
    train_modules: Sequence[torch.nn.Module] = (),
) -> tuple[dict[str, Tensor], dict]:
    """Train `params` (leaf tensors with requires_grad) and return the best-on-dev copy and a summary.

    `train_scorer(batch, step)`, if given, scores training batches instead of `scorer` (for methods whose
    training forward differs from evaluation, e.g. sampled Gumbel choices at a step-dependent temperature).
    `train_modules` are put in train mode for training forwards (their dropout on) and in eval mode for every
    evaluation and after training; with `method.model_dropout=true` the frozen model is one of them (its own
    dropout modules at its own rates, as the reference codes train with the model in train mode).
    Each step: loss -> backward -> clip to optimizer.max_grad_norm (if set) -> optimizer step -> schedule step.
    """
    optimizer = torch_optim.build(ctx.optimizer, list(params.values()), lr=ctx.method.lr,
                                  weight_decay=ctx.method.weight_decay)
    schedule = torch_optim.build_schedule(ctx.optimizer, optimizer, max_steps)
    dropout_modules = list(train_modules)
    if ctx.method.get("model_dropout") and ctx.backbone is not None:
        dropout_modules.append(ctx.backbone.model)

    def set_training(flag: bool) -> None:
        for module in dropout_modules:
            module.train(flag)

    set_training(False)
    best = BestOnDev()
    best_params = {k: v.detach().clone() for k, v in params.items()}
    step = 0
    saved = ctx.checkpoint.load()
    if saved is not None:
        tensors, meta = saved
        with torch.no_grad():
            for name, value in params.items():
                value.copy_(tensors[f"param.{name}"])
        best_params = {name: tensors[f"best.{name}"].to(value.device) for name, value in params.items()}
        torch_optim.load_state_tensors(optimizer, tensors)
        torch_optim.load_schedule_state(schedule, optimizer, meta.get("schedule"))
        torch.set_rng_state(tensors["rng"])
        step = int(meta["step"])
        best = BestOnDev(meta["best"]["score"], meta["best"]["step"], stale=meta["best"].get("stale", 0))

    def test_of(kept: dict[str, Tensor]) -> float:
        with torch.no_grad():
            saved = {k: v.detach().clone() for k, v in params.items()}
            for k, v in params.items():
                v.copy_(kept[k])
            score = ctx.evaluation.test(scorer)[ctx.evaluation.metric]
            for k, v in params.items():
                v.copy_(saved[k])
        return score

    def evaluate(at: int) -> None:
        nonlocal best_params
        scores = ctx.evaluation.dev(scorer)
        record = {f"dev/{k}": v for k, v in scores.items()}
        if best.offer(scores[ctx.evaluation.metric], at):
            best_params = {k: v.detach().clone() for k, v in params.items()}
        if ctx.evaluation.test is not None:
            # For curves only (run.track_test): the test score of the best-on-dev parameters so far.
            record[f"test/{ctx.evaluation.metric}"] = best.test_score(lambda: test_of(best_params))
        ctx.tracker.log(record, step=at)

    if step == 0:
        evaluate(0)
    bar = progress.bar(max_steps, "train", unit="steps", initial=step)
    def patience_left() -> bool:
        return ctx.patience is None or best.stale < int(ctx.patience)

    while step < max_steps and patience_left():
        index = _batch_order(len(ctx.train), batch_size, ctx.seed, step)
        batch = ctx.train.batch(index)
        set_training(True)
        logits = scorer(batch) if train_scorer is None else train_scorer(batch, step)
        loss = F.cross_entropy(logits.float(), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        set_training(False)
        record = {"train/loss": loss.detach().item()}
        grad_norm = torch_optim.clip(ctx.optimizer, list(params.values()))
        if grad_norm is not None:
            record["train/grad_norm"] = grad_norm
        if schedule is not None:
            record["train/lr"] = torch_optim.current_lr(optimizer)  # the rate this step's update uses
        optimizer.step()
        if schedule is not None:
            schedule.step()
        step += 1
        bar.update(1)
        ctx.tracker.log(record, step=step)
        if step % eval_every == 0 or step == max_steps:
            evaluate(step)
            ctx.checkpoint.save(
                {
                    **{f"param.{k}": v for k, v in params.items()},
                    **{f"best.{k}": v for k, v in best_params.items()},
                    **torch_optim.state_tensors(optimizer),
                    "rng": torch.get_rng_state(),
                },
                {"step": step, "best": {"score": best.score, "step": best.step, "stale": best.stale},
                 "schedule": torch_optim.schedule_state(schedule)},
            )
    bar.close()
    set_training(False)
    return best_params, {"best_dev": best.score, "best_step": best.step, "steps": step,
                         "stopped_early": step < max_steps}
