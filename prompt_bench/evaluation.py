"""Scores -> predictions -> the task's metrics."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from prompt_bench import progress
from prompt_bench.batching import EncodedSplit
from prompt_bench.models.backbone import EncodedBatch
from prompt_bench.tasks import metrics

ScoreFn = Callable[[EncodedBatch], Tensor]  # batch -> [B, C] class logits


@torch.no_grad()
def predict(score: ScoreFn, split: EncodedSplit, batch_size: int, desc: str = "evaluate") -> tuple[Tensor, Tensor]:
    """(logits [N, C], labels [N]) in the split's original order."""
    # Length-sorted batches waste little on padding; results are put back in the split's order.
    order = sorted(range(len(split)), key=lambda i: len(split.ids[i]))
    bar = progress.bar(len(order), desc, unit="examples")
    logits = []
    for start in range(0, len(order), batch_size):
        logits.append(score(split.batch(order[start : start + batch_size])).float().cpu())
        bar.update(len(logits[-1]))
    bar.close()
    stacked = torch.cat(logits)
    result = torch.empty_like(stacked)
    result[torch.tensor(order)] = stacked
    return result, torch.tensor(split.labels)


def score_split(score: ScoreFn, split: EncodedSplit, metric: str, batch_size: int,
                desc: str = "evaluate") -> dict[str, float]:
    logits, labels = predict(score, split, batch_size, desc)
    return metrics.compute(metric, logits.argmax(-1).numpy(), labels.numpy(), split.groups)
