"""Black-Box Tuning (Sun et al., ICML 2022): CMA-ES over z in R^d, prompt = A z, model reached only
through the billed BlackBoxAPI. Each generation is scored in one population-batched query."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import FitContext, Method, Solution
from prompt_bench.optim.dfo import AskTellSearch
from prompt_bench.prompts.projection import RandomProjection

LOSSES = ("ce", "hinge")


def prompt_loss(logits: Tensor, labels: Tensor, kind: str) -> Tensor:
    """Per-candidate loss [P] of logits [P, B, C]; hinge is the multi-class margin loss BBT offers."""
    flat, target = logits.float().flatten(0, 1), labels.repeat(logits.shape[0])
    if kind == "ce":
        per_example = F.cross_entropy(flat, target, reduction="none")
    else:
        per_example = F.multi_margin_loss(flat, target, margin=1.0, reduction="none")
    return per_example.view(logits.shape[0], -1).mean(1)


class BBT(Method):
    access = "black_box"

    @classmethod
    def check(cls, cfg) -> None:
        if int(cfg["budget"]) <= 0:
            raise ConfigError(f"method.budget must be a positive number of API calls, got {cfg['budget']}")
        if cfg["loss"] not in LOSSES:
            raise ConfigError(f"method.loss={cfg['loss']} is unknown: use one of {', '.join(LOSSES)}")
        for key in ("intrinsic_dim", "n_prompt_tokens", "eval_every"):
            if int(cfg[key]) <= 0:
                raise ConfigError(f"method.{key} must be positive, got {cfg[key]}")

    def fit(self, ctx: FitContext) -> Solution:
        cfg, api = ctx.method, ctx.blackbox
        dim, n_tokens = int(cfg["intrinsic_dim"]), int(cfg["n_prompt_tokens"])
        project = RandomProjection(
            dim, n_tokens, api.hidden_size, api.embedding_std, sigma=float(ctx.optimizer.get("sigma", 1.0)),
            alpha=float(cfg["alpha"]), seed=ctx.seed, device=api.device,
        )
        search = AskTellSearch(ctx.optimizer, dim, budget=api.budget, seed=ctx.seed)
        state = _SearchState.resume(ctx, search, project, api)
        next_eval = (api.calls // int(cfg["eval_every"]) + 1) * int(cfg["eval_every"])
        bar = tqdm(total=api.budget, initial=api.calls, desc="API calls", disable=not ctx.progress, leave=False)
        while api.remaining > 0:
            z = search.ask(min(search.popsize, api.remaining))
            logits = api.query(project(torch.from_numpy(z)))
            losses = prompt_loss(logits, api.train_labels, str(cfg["loss"]))
            search.tell(losses.tolist())
            accuracy = (logits.argmax(-1) == api.train_labels).float().mean(1)
            state.record(z, losses, accuracy)
            bar.update(len(z))
            ctx.tracker.log({"train/loss": float(losses.min()), "train/accuracy": float(accuracy.max())}, step=api.calls)
            if api.calls >= next_eval or api.remaining == 0:
                next_eval += int(cfg["eval_every"])
                state.evaluate_dev()
            state.save(int(cfg.get("checkpoint_every", 1)))
        bar.close()
        best_z = torch.from_numpy(state.best_z)
        return Solution(
            prompt=project(best_z[None])[0].detach(),
            tensors={"z": best_z},
            meta={"best_dev": state.best_dev, "best_calls": state.best_calls, "projection_std": project.std,
                  "selection": "best dev score among the CMA-ES mean / best-train candidates at each evaluation"},
            budget_used=api.calls,
        )


class _SearchState:
    """Losses told so far (enough to replay the search), the incumbent, and best-on-dev bookkeeping."""

    def __init__(self, ctx: FitContext, search: AskTellSearch, project: RandomProjection, api):
        self.ctx, self.search, self.project, self.api = ctx, search, project, api
        self.losses: list[list[float]] = []
        self.best_train_z: np.ndarray | None = None
        self.best_train_loss = float("inf")
        self.best_z = np.zeros(search.dim)
        self.best_dev = -float("inf")
        self.best_calls = 0
        self.generations_since_save = 0

    @classmethod
    def resume(cls, ctx, search, project, api) -> "_SearchState":
        state = cls(ctx, search, project, api)
        saved = ctx.checkpoint.load()
        if saved is None:
            return state
        tensors, meta = saved
        for generation in meta["losses"]:
            search.ask(len(generation))
            search.tell(generation)
        state.losses = meta["losses"]
        api.calls = int(meta["calls"])
        state.best_z = tensors["best_z"].double().numpy()
        state.best_train_z = tensors["best_train_z"].double().numpy() if "best_train_z" in tensors else None
        state.best_train_loss, state.best_dev, state.best_calls = meta["best_train_loss"], meta["best_dev"], meta["best_calls"]
        return state

    def record(self, z: np.ndarray, losses: Tensor, accuracy: Tensor) -> None:
        self.losses.append([float(x) for x in losses])
        i = int(losses.argmin())
        if float(losses[i]) < self.best_train_loss:
            self.best_train_loss, self.best_train_z = float(losses[i]), z[i].copy()
        self.generations_since_save += 1

    def evaluate_dev(self) -> None:
        # BBT keeps the prompt with the best dev score; candidates are the search's current
        # recommendation and the lowest-train-loss prompt seen so far.
        metric = self.ctx.primary_metric
        record = {}
        for name, z in (("recommended", self.search.recommend()), ("best_train", self.best_train_z)):
            if z is None:
                continue
            prompt = self.project(torch.from_numpy(z)[None])[0]
            score = self.ctx.dev_score(lambda batch: self.api.score(batch, prompt))[metric]
            record[f"dev/{metric}_{name}"] = score
            if score > self.best_dev:
                self.best_dev, self.best_z, self.best_calls = score, np.array(z, copy=True), self.api.calls
        record[f"dev/{metric}"] = self.best_dev  # the selected prompt's dev score so far
        self.ctx.tracker.log(record, step=self.api.calls)

    def save(self, every: int) -> None:
        if self.generations_since_save < every and self.api.remaining > 0:
            return
        self.generations_since_save = 0
        tensors = {"best_z": torch.from_numpy(np.asarray(self.best_z, dtype=np.float64))}
        if self.best_train_z is not None:
            tensors["best_train_z"] = torch.from_numpy(np.asarray(self.best_train_z, dtype=np.float64))
        self.ctx.checkpoint.save(
            tensors,
            {"losses": self.losses, "calls": self.api.calls, "best_train_loss": self.best_train_loss,
             "best_dev": self.best_dev, "best_calls": self.best_calls},
        )


METHOD = BBT
