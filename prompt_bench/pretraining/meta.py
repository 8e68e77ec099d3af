"""Meta-learning a prompt initialisation over auxiliary tasks (MetaPT), or multi-task pre-training on their
union (PPT), in one loop.

Every meta-step samples `tasks_per_batch` auxiliary tasks (clusters) and, for each, a support and a query
batch, deterministically from (seed, step) so an interrupted pre-training resumes to the same prompt:
- `fomaml`: adapt a copy of the prompt with `inner_steps` SGD steps on the support batch, take the query
  loss's gradient at the adapted prompt as the meta-gradient (first-order MAML);
- `maml`: the same with the inner steps kept in the autograd graph (second-order, through the frozen model);
- `reptile`: adapt on support batches, the meta-gradient is (prompt - adapted prompt);
- `multitask` (PPT): no adaptation, the gradient of the loss on the sampled batches.
The outer update averages the meta-gradients over the sampled tasks and steps the outer optimizer (AdamW).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from prompt_bench import progress
from prompt_bench.batching import EncodedSplit
from prompt_bench.checkpoint import Checkpoint
from prompt_bench.errors import ConfigError
from prompt_bench.models.backbone import Backbone
from prompt_bench.optim import torch_optim

ALGORITHMS = ("fomaml", "maml", "reptile", "multitask")


def auxiliary_tasks(assignment: np.ndarray, min_size: int) -> list[np.ndarray]:
    """Member indices of every cluster with at least `min_size` texts (smaller ones cannot give a batch)."""
    tasks = [np.flatnonzero(assignment == c) for c in sorted(set(assignment.tolist()))]
    kept = [t for t in tasks if len(t) >= min_size]
    if not kept:
        raise ConfigError(f"no cluster has {min_size} texts: lower method.pretrain.k or batch_size, or use a larger corpus")
    return kept


def meta_train(backbone: Backbone, split: EncodedSplit, tasks: list[np.ndarray], prompt: Tensor,
               cfg: Mapping[str, Any], checkpoint: Checkpoint | None = None,
               on_step: Callable[[int, float], None] | None = None) -> Tensor:
    algorithm = str(cfg["algorithm"])
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"method.pretrain.algorithm={algorithm} is not one of {', '.join(ALGORITHMS)}")
    steps, per_batch, batch_size = int(cfg["meta_steps"]), int(cfg["tasks_per_batch"]), int(cfg["batch_size"])
    inner_lr, inner_steps, seed = float(cfg["inner_lr"]), int(cfg["inner_steps"]), int(cfg["seed"])
    prompt = prompt.detach().clone().float().to(backbone.device).requires_grad_(True)
    outer = torch_optim.build({"name": "adamw"}, [prompt], lr=float(cfg["outer_lr"]), weight_decay=0.0)
    start = 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        tensors, meta = saved
        with torch.no_grad():
            prompt.copy_(tensors["prompt"])
        torch_optim.load_state_tensors(outer, tensors)
        start = int(meta["step"])

    def loss_at(p: Tensor, index) -> Tensor:
        batch = split.batch([int(i) for i in index])
        if algorithm != "maml":
            return F.cross_entropy(backbone.label_logits(batch, p[None])[0].float(), batch.labels)
        # second-order MAML differentiates the attention backward, which only sdpa's math kernel can
        with sdpa_kernel(SDPBackend.MATH):
            return F.cross_entropy(backbone.label_logits(batch, p[None])[0].float(), batch.labels)

    bar = progress.bar(steps, f"meta-train ({algorithm})", unit="meta-steps", initial=start)
    for step in range(start, steps):
        bar.update(1)
        rng = np.random.RandomState(seed * 1_000_003 + step)
        chosen = rng.choice(len(tasks), size=min(per_batch, len(tasks)), replace=False)
        meta_grad = torch.zeros_like(prompt)
        query_losses = []
        for t in chosen:
            members = tasks[t]
            support = rng.choice(members, size=batch_size, replace=len(members) < 2 * batch_size)
            query = rng.choice(members, size=batch_size, replace=len(members) < 2 * batch_size)
            if algorithm == "multitask":
                loss = loss_at(prompt, support)
                meta_grad += torch.autograd.grad(loss, prompt)[0]
                query_losses.append(loss.detach().item())
                continue
            adapted = prompt if algorithm == "maml" else prompt.detach().clone().requires_grad_(True)
            for _ in range(inner_steps):
                grad = torch.autograd.grad(loss_at(adapted, support), adapted, create_graph=algorithm == "maml")[0]
                adapted = adapted - inner_lr * grad
                if algorithm != "maml":
                    adapted = adapted.detach().requires_grad_(True)
            if algorithm == "reptile":
                meta_grad += (prompt - adapted).detach()
                with torch.no_grad():
                    query_losses.append(loss_at(adapted, query).item())
                continue
            loss = loss_at(adapted, query)
            target = prompt if algorithm == "maml" else adapted
            meta_grad += torch.autograd.grad(loss, target)[0]
            query_losses.append(loss.detach().item())
        outer.zero_grad(set_to_none=True)
        prompt.grad = meta_grad / len(chosen)
        outer.step()
        if on_step is not None:
            on_step(step + 1, float(np.mean(query_losses)))
        every = int(cfg.get("checkpoint_every", 10))
        if checkpoint is not None and ((step + 1) % every == 0 or step + 1 == steps):
            checkpoint.save({"prompt": prompt.detach(), **torch_optim.state_tensors(outer)}, {"step": step + 1})
    return prompt.detach()
