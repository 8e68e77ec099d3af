"""The derivative-free search loop every black-box method runs (BBT, BBTv2, Clip-Tuning, GDFO).

Until the budget is spent: ask the search for a generation, buy its losses through a `Scoring` (one billed
query by default), tell them, evaluate dev candidates at every `method.eval_every`-th API call and at the end
(best on dev, `selection.BestOnDev`), and checkpoint. A method brings three things: the search (anything with
`optim.dfo.Search`'s protocol), `encode` (candidates z -> prompts), and how a candidate is scored (`Scoring`,
or a subclass: Clip-Tuning's thinned networks, GDFO's distilling teacher). Nothing here is subclassed.

A checkpoint holds the losses told so far; a resumed run re-creates the search by telling them again, so the
search continues exactly where it stopped (the search and the scoring add what else their replay needs).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from prompt_bench import progress
from prompt_bench.methods.base import BlackBoxContext
from prompt_bench.methods.selection import BestOnDev
from prompt_bench.models.backbone import EncodedBatch

#: candidates z [n, D] -> (prompts [n, L, d], per-candidate keyword tensors for api.query / api.score)
Encoder = Callable[[Tensor], "tuple[Tensor, dict[str, Tensor]]"]

#: what a dev evaluation may score (method.dev_candidates), named by what each candidate is:
#: at_call: the candidate scored at the eval_every-th API call (bbt.py:501, its default serial mode);
#: generation_best: the lowest-train-loss candidate of that call's generation (bbt.py --parallel);
#: best_so_far: the lowest-train-loss candidate told so far; mean: the CMA-ES distribution's mean
DEV_CANDIDATES = ("at_call", "generation_best", "best_so_far", "mean")


def prompt_loss(logits: Tensor, labels: Tensor, kind: str, margin: float = 2.0) -> Tensor:
    """Per-candidate loss [P] of logits [P, B, C], averaged over the B examples.

    hinge: utils.py's hinge_loss as bbt.py:394 calls it, sum over the wrong classes j of
    max(0, x_j - x_y + margin), margin 2 (metrics.py's `self.margin`), summed over examples / B."""
    flat, target = logits.float().flatten(0, 1), labels.repeat(logits.shape[0])
    if kind == "ce":
        per_example = F.cross_entropy(flat, target, reduction="none")
    else:
        gold = flat.gather(1, target[:, None])
        excess = (flat - gold + margin).clamp(min=0).scatter(1, target[:, None], 0.0)
        per_example = excess.sum(1)
    return per_example.view(logits.shape[0], -1).mean(1)


class Scoring:
    """How candidates are bought and judged: one billed query of the train set, the method's loss
    (`method.loss`, `method.hinge_margin`), and plain dev logits. Variants override `train` / `dev`."""

    #: API calls one candidate costs; the search stops when the budget left cannot buy one more
    calls_per_candidate = 1

    def __init__(self, ctx: BlackBoxContext, api):
        self.ctx, self.api = ctx, api
        self.kind, self.margin = str(ctx.method["loss"]), ctx.method.hinge_margin

    def loss(self, logits: Tensor) -> Tensor:
        """Per-candidate loss [P] of train logits [P, B, C]."""
        return prompt_loss(logits, self.api.train_labels, self.kind, self.margin)

    def train(self, prompts: Tensor, extra: dict[str, Tensor], z: np.ndarray, generation: int) -> tuple[Tensor, Tensor]:
        """(loss [P], train accuracy [P]) of P encoded candidates (`z`: the generation asked), one billed query."""
        logits = self.api.query(prompts, **extra)
        return self.loss(logits), (logits.argmax(-1) == self.api.train_labels).float().mean(1)

    def dev(self, batch: EncodedBatch, prompt: Tensor, extra: dict[str, Tensor]) -> Tensor:
        """[B, C] logits of one candidate on a dev batch (free: dev selection is not billed)."""
        return self.api.score(batch, prompt, **extra)

    # a scoring that learns from what it bought (GDFO's student) keeps it in the checkpoint and replays it
    def checkpoint_meta(self) -> dict[str, Any]:
        return {}

    def replay(self, meta: dict[str, Any], generation: int, z: np.ndarray) -> None:
        """Called for each saved generation while a resumed search is re-created, between its ask and tell."""


def selection_note(cfg) -> str:
    chosen = ", ".join(cfg.get("dev_candidates") or ["at_call"])
    return (f"the best dev score (first reached kept) among the dev candidates ({chosen}) evaluated every "
            f"{cfg['eval_every']} API calls and at the end of the budget")


def eval_hits(calls_before: int, n: int, cost: int, every: int) -> list[int]:
    """Indices of the candidates of a generation whose billing reaches a multiple of `every` API calls
    (candidate i is billed calls_before + i * cost + 1 .. calls_before + (i + 1) * cost)."""
    return [i for i in range(n) if (calls_before + i * cost) // every < (calls_before + (i + 1) * cost) // every]


def run_search(ctx: BlackBoxContext, search, encode: Encoder, scoring: Scoring) -> "SearchState":
    """Run (or resume from the checkpoint) the search until the budget cannot buy another candidate."""
    state = SearchState.resume(ctx, search, encode, scoring)
    api, cfg = scoring.api, ctx.method
    cost, every = scoring.calls_per_candidate, cfg.eval_every
    bar = progress.bar(api.budget, "search", unit="API calls", initial=api.calls)
    while api.remaining >= cost:
        z = search.ask(min(search.popsize, api.remaining // cost))
        calls_before = api.calls
        prompts, extra = encode(torch.from_numpy(z))
        losses, accuracy = scoring.train(prompts, extra, z, len(state.losses))
        search.tell(losses.tolist())
        state.record(z, losses)
        bar.update(len(z) * cost)
        ctx.tracker.log({"train/loss": float(losses.min()), "train/accuracy": float(accuracy.max())}, step=api.calls)
        hits = eval_hits(calls_before, len(z), cost, every)
        if not hits and api.remaining < cost:
            hits = [len(z) - 1]  # the budget ends between two evaluations: its last candidate is still judged
        if hits:
            state.evaluate_dev(z, losses, hits)
        state.save(cfg.checkpoint_every)
    bar.close()
    return state


class SearchState:
    """Losses told so far (enough to replay the search), the lowest-train-loss candidate, and the best on dev."""

    def __init__(self, ctx: BlackBoxContext, search, encode: Encoder, scoring: Scoring):
        self.ctx, self.search, self.encode, self.scoring, self.api = ctx, search, encode, scoring, scoring.api
        self.losses: list[list[float]] = []
        self.best_train_z: np.ndarray | None = None
        self.best_train_loss = float("inf")
        self.best_z = np.zeros(search.dim)
        self.best = BestOnDev()
        self.generations_since_save = 0

    # what a method reports about the selected prompt
    @property
    def best_dev(self) -> float:
        return self.best.score

    @property
    def best_calls(self) -> int:
        return self.best.step

    @property
    def best_source(self) -> str:
        return self.best.source

    @classmethod
    def resume(cls, ctx, search, encode: Encoder, scoring: Scoring) -> "SearchState":
        state = cls(ctx, search, encode, scoring)
        saved = ctx.checkpoint.load()
        if saved is None:
            return state
        tensors, meta = saved
        search.begin_replay(meta)
        for generation, losses in enumerate(meta["losses"]):
            z = search.ask(len(losses))
            scoring.replay(meta, generation, z)
            search.tell(losses)
        search.end_replay(meta)
        state.losses = meta["losses"]
        state.api.calls = int(meta["calls"])
        state.best_z = tensors["best_z"].double().numpy()
        state.best_train_z = tensors["best_train_z"].double().numpy() if "best_train_z" in tensors else None
        state.best_train_loss = meta["best_train_loss"]
        state.best = BestOnDev(meta["best_dev"], meta["best_calls"], meta.get("best_source", "none"))
        return state

    def record(self, z: np.ndarray, losses: Tensor) -> None:
        self.losses.append([float(x) for x in losses])
        i = int(losses.argmin())
        if float(losses[i]) < self.best_train_loss:
            self.best_train_loss, self.best_train_z = float(losses[i]), z[i].copy()
        self.generations_since_save += 1

    def evaluate_dev(self, z: np.ndarray, losses: Tensor, hits: list[int]) -> None:
        """Score this evaluation's dev candidates (method.dev_candidates) and keep the best on dev.

        `z`, `losses`: the generation just told; `hits`: its candidates billed at an eval_every-th call."""
        metric = self.ctx.evaluation.metric
        candidates: list[tuple[str, np.ndarray | None]] = []
        for name in self.ctx.method.get("dev_candidates") or ["at_call"]:
            if name == "at_call":
                candidates += [("at_call", z[i]) for i in hits]
            elif name == "generation_best":
                candidates.append((name, z[int(losses.argmin())]))
            elif name == "best_so_far":
                candidates.append((name, self.best_train_z))
            elif name == "mean":
                candidates.append((name, self.search.mean()))
        record = {}
        for name, candidate in candidates:
            if candidate is None:
                continue
            score = self.ctx.evaluation.dev(self._scorer(candidate))[metric]
            record[f"dev/{metric}_{name}"] = score
            if self.best.offer(score, self.api.calls, name):
                self.best_z = np.array(candidate, copy=True)
        record[f"dev/{metric}"] = self.best.score  # the selected prompt's dev score so far
        if self.ctx.evaluation.test is not None:
            # For budget curves only (run.track_test): the selected prompt's test score, never used to select.
            record[f"test/{metric}"] = self.best.test_score(lambda: self.ctx.evaluation.test(self._scorer(self.best_z))[metric])
        self.ctx.tracker.log(record, step=self.api.calls)

    def _scorer(self, z: np.ndarray):
        prompts, extra = self.encode(torch.from_numpy(np.asarray(z))[None])
        extra = {k: v[0] for k, v in extra.items()}
        return lambda batch: self.scoring.dev(batch, prompts[0], extra)

    def save(self, every: int) -> None:
        if self.generations_since_save < every and self.api.remaining >= self.scoring.calls_per_candidate:
            return
        self.generations_since_save = 0
        tensors = {"best_z": torch.from_numpy(np.asarray(self.best_z, dtype=np.float64))}
        if self.best_train_z is not None:
            tensors["best_train_z"] = torch.from_numpy(np.asarray(self.best_train_z, dtype=np.float64))
        self.ctx.checkpoint.save(
            tensors,
            {"losses": self.losses, "calls": self.api.calls, "best_train_loss": self.best_train_loss,
             "best_dev": self.best.score, "best_calls": self.best.step, "best_source": self.best.source,
             **self.search.checkpoint_meta(), **self.scoring.checkpoint_meta()},
        )
