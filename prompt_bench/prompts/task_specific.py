"""Shared + task-specific soft prompts for setting=multitask (`setting.prompt=shared+task`).

Every row's prompt is the shared prompt followed by its own task's prompt, so what the tasks have in common is
learned once and what differs has room of its own (the multitask prompt tuning layout of ATTEMPT / MPT). The
rows of a mixed batch are scored task by task: each group is an ordinary one-prompt forward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prompt_bench.models.backbone import Backbone, EncodedBatch


def task_prompt_logits(backbone: Backbone, batch: EncodedBatch, shared: Tensor, task_prompts: Tensor) -> Tensor:
    """[B, C] class logits, row b prompted by [shared; task_prompts[task of b]]."""
    if batch.task_ids is None:
        raise ValueError("task-specific prompts need a multitask batch (rows that know their task)")
    parts, order = [], []
    for task in torch.unique(batch.task_ids).tolist():
        index = torch.nonzero(batch.task_ids == task).squeeze(1)
        prompt = torch.cat([shared, task_prompts[task]], dim=0).unsqueeze(0)
        parts.append(backbone.label_logits(batch.rows(index), prompt)[0])
        order.append(index)
    inverse = torch.empty(len(batch), dtype=torch.long, device=batch.task_ids.device)
    inverse[torch.cat(order)] = torch.arange(len(batch), device=inverse.device)
    return torch.cat(parts)[inverse]
