"""Black-Box Tuning (Sun et al., ICML 2022): CMA-ES over z in R^d, prompt = A z, model reached only
through the billed BlackBoxAPI. Each generation is scored in one population-batched query."""

from __future__ import annotations

from typing import Callable

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

#: candidates z [n, D] -> (prompts [n, L, d], per-candidate keyword tensors for api.query / api.score)
Encoder = Callable[[Tensor], "tuple[Tensor, dict[str, Tensor]]"]


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
        # the optimizer's budget is in candidates (NGOpt picks its algorithm by it), not API calls
        search = AskTellSearch(ctx.optimizer, dim, budget=api.budget // self._calls_per_candidate(ctx), seed=ctx.seed)
        state = run_search(ctx, self._resume(ctx, search, lambda z: (project(z), {}), api))
        best_z = torch.from_numpy(state.best_z)
        return Solution(
            prompt=project(best_z[None])[0].detach(),
            tensors={"z": best_z},
            meta={"best_dev": state.best_dev, "best_calls": state.best_calls, "projection_std": project.std,
                  "selection": "best dev score among the CMA-ES mean / best-train candidates at each evaluation"},
            budget_used=api.calls,
        )

    def _calls_per_candidate(self, ctx: FitContext) -> int:
        return 1

    def _resume(self, ctx: FitContext, search: AskTellSearch, encode: Encoder, api) -> "_SearchState":
        """The search state (a BBT variant swaps in its own, e.g. clip_tuning's thinned-network scoring)."""
        return _SearchState.resume(ctx, search, encode, api)


def run_search(ctx: FitContext, state: "_SearchState") -> "_SearchState":
    """BBT's loop until the budget is spent: ask a generation, score it in one billed query, tell the
    losses, evaluate on dev every `eval_every` calls, checkpoint. Shared by the BBT family."""
    cfg, api, search = ctx.method, state.api, state.search
    cost = state.calls_per_candidate
    next_eval = (api.calls // int(cfg["eval_every"]) + 1) * int(cfg["eval_every"])
    bar = tqdm(total=api.budget, initial=api.calls, desc="API calls", disable=not ctx.progress, leave=False)
    while api.remaining >= cost:
        z = search.ask(min(search.popsize, api.remaining // cost))
        prompts, extra = state.encode(torch.from_numpy(z))
        losses, accuracy = state.candidate_losses(prompts, extra)
        search.tell(losses.tolist())
        state.record(z, losses)
        bar.update(len(z) * cost)
        ctx.tracker.log({"train/loss": float(losses.min()), "train/accuracy": float(accuracy.max())}, step=api.calls)
        if api.calls >= next_eval or api.remaining < cost:
            next_eval += int(cfg["eval_every"])
            state.evaluate_dev()
        state.save(int(cfg.get("checkpoint_every", 1)))
    bar.close()
    return state


class _SearchState:
    """Losses told so far (enough to replay the search), the incumbent, and best-on-dev bookkeeping.

    `search` is anything with AskTellSearch's ask/tell/recommend/popsize/dim; `encode` turns its
    candidates into what api.query takes. Subclasses add checkpoint entries (`_extra_meta`) and
    may check the replay (`_replay`); a variant that scores candidates differently overrides
    `candidate_losses`, `dev_logits` and `calls_per_candidate`."""

    #: API calls one candidate costs; the search stops when the budget left cannot buy one more
    calls_per_candidate = 1

    def __init__(self, ctx: FitContext, search: AskTellSearch, encode: Encoder, api):
        self.ctx, self.search, self.encode, self.api = ctx, search, encode, api
        self.losses: list[list[float]] = []
        self.best_train_z: np.ndarray | None = None
        self.best_train_loss = float("inf")
        self.best_z = np.zeros(search.dim)
        self.best_dev = -float("inf")
        self.best_calls = 0
        self.generations_since_save = 0
        self.test_of_best: float | None = None

    @classmethod
    def resume(cls, ctx, search, encode: Encoder, api) -> "_SearchState":
        state = cls(ctx, search, encode, api)
        saved = ctx.checkpoint.load()
        if saved is None:
            return state
        tensors, meta = saved
        state._replay(meta)
        state.losses = meta["losses"]
        api.calls = int(meta["calls"])
        state.best_z = tensors["best_z"].double().numpy()
        state.best_train_z = tensors["best_train_z"].double().numpy() if "best_train_z" in tensors else None
        state.best_train_loss, state.best_dev, state.best_calls = meta["best_train_loss"], meta["best_dev"], meta["best_calls"]
        return state

    def _replay(self, meta: dict) -> None:
        """Re-create the search by telling it the saved losses, generation by generation, in order."""
        for generation in meta["losses"]:
            self.search.ask(len(generation))
            self.search.tell(generation)

    def _extra_meta(self) -> dict:
        return {}

    def candidate_losses(self, prompts: Tensor, extra: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(loss [P], train accuracy [P]) of P encoded candidates, bought in one billed query."""
        logits = self.api.query(prompts, **extra)
        losses = prompt_loss(logits, self.api.train_labels, str(self.ctx.method["loss"]))
        return losses, (logits.argmax(-1) == self.api.train_labels).float().mean(1)

    def dev_logits(self, batch, prompt: Tensor, extra: dict[str, Tensor]) -> Tensor:
        """[B, C] logits of one candidate on a dev batch (free: dev selection is not billed)."""
        return self.api.score(batch, prompt, **extra)

    def record(self, z: np.ndarray, losses: Tensor) -> None:
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
            score = self.ctx.dev_score(self._scorer(z))[metric]
            record[f"dev/{metric}_{name}"] = score
            if score > self.best_dev:
                self.best_dev, self.best_z, self.best_calls = score, np.array(z, copy=True), self.api.calls
                self.test_of_best = None
        record[f"dev/{metric}"] = self.best_dev  # the selected prompt's dev score so far
        if self.ctx.test_score is not None:
            # For budget curves only (run.track_test): the selected prompt's test score, never used to select.
            if self.test_of_best is None:
                self.test_of_best = self.ctx.test_score(self._scorer(self.best_z))[metric]
            record[f"test/{metric}"] = self.test_of_best
        self.ctx.tracker.log(record, step=self.api.calls)

    def _scorer(self, z: np.ndarray):
        prompts, extra = self.encode(torch.from_numpy(np.asarray(z))[None])
        extra = {k: v[0] for k, v in extra.items()}
        return lambda batch: self.dev_logits(batch, prompts[0], extra)

    def save(self, every: int) -> None:
        if self.generations_since_save < every and self.api.remaining >= self.calls_per_candidate:
            return
        self.generations_since_save = 0
        tensors = {"best_z": torch.from_numpy(np.asarray(self.best_z, dtype=np.float64))}
        if self.best_train_z is not None:
            tensors["best_train_z"] = torch.from_numpy(np.asarray(self.best_train_z, dtype=np.float64))
        self.ctx.checkpoint.save(
            tensors,
            {"losses": self.losses, "calls": self.api.calls, "best_train_loss": self.best_train_loss,
             "best_dev": self.best_dev, "best_calls": self.best_calls, **self._extra_meta()},
        )


METHOD = BBT
