"""The gradient-descent loop shared by white-box methods: seeded mini-batches, periodic dev evaluation,
best-on-dev selection (the LM-BFF / BBT protocol), and checkpoints that resume to the same result."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from prompt_bench import progress
from prompt_bench.methods.base import FitContext
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
    ctx: FitContext,
    params: dict[str, Tensor],
    scorer: Scorer,
    max_steps: int,
    batch_size: int,
    eval_every: int,
    train_scorer: Callable[[EncodedBatch, int], Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict]:
    """Train `params` (leaf tensors with requires_grad) and return the best-on-dev copy and a summary.

    `train_scorer(batch, step)`, if given, scores training batches instead of `scorer` (for methods whose
    training forward differs from evaluation, e.g. sampled Gumbel choices at a step-dependent temperature).
    """
    optimizer = torch_optim.build(ctx.optimizer, list(params.values()))
    best = {"score": -float("inf"), "step": 0}
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
        torch.set_rng_state(tensors["rng"])
        step, best = int(meta["step"]), dict(meta["best"])

    test_of_best: float | None = None

    def evaluate(at: int) -> None:
        nonlocal best, best_params, test_of_best
        scores = ctx.dev_score(scorer)
        score = scores[ctx.primary_metric]
        record = {f"dev/{k}": v for k, v in scores.items()}
        if score > best["score"]:
            best = {"score": score, "step": at, "stale": 0}
            best_params = {k: v.detach().clone() for k, v in params.items()}
            test_of_best = None
        else:
            best["stale"] = best.get("stale", 0) + 1
        if ctx.test_score is not None:
            # For curves only (run.track_test): the test score of the best-on-dev parameters so far.
            if test_of_best is None:
                with torch.no_grad():
                    saved = {k: v.detach().clone() for k, v in params.items()}
                    for k, v in params.items():
                        v.copy_(best_params[k])
                    test_of_best = ctx.test_score(scorer)[ctx.primary_metric]
                    for k, v in params.items():
                        v.copy_(saved[k])
            record[f"test/{ctx.primary_metric}"] = test_of_best
        ctx.tracker.log(record, step=at)

    if step == 0:
        evaluate(0)
    bar = progress.bar(max_steps, "train", unit="steps", initial=step)
    def patience_left() -> bool:
        return ctx.patience is None or best.get("stale", 0) < int(ctx.patience)

    while step < max_steps and patience_left():
        index = _batch_order(len(ctx.train), batch_size, ctx.seed, step)
        batch = ctx.train.batch(index)
        logits = scorer(batch) if train_scorer is None else train_scorer(batch, step)
        loss = F.cross_entropy(logits.float(), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        ctx.tracker.log({"train/loss": loss.detach().item()}, step=step)
        if step % eval_every == 0 or step == max_steps:
            evaluate(step)
            ctx.checkpoint.save(
                {
                    **{f"param.{k}": v for k, v in params.items()},
                    **{f"best.{k}": v for k, v in best_params.items()},
                    **torch_optim.state_tensors(optimizer),
                    "rng": torch.get_rng_state(),
                },
                {"step": step, "best": best},
            )
    bar.close()
    return best_params, {"best_dev": best["score"], "best_step": best["step"], "steps": step,
                         "stopped_early": step < max_steps}
