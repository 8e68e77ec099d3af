"""Black-Box Tuning (Sun et al., ICML 2022): CMA-ES over z in R^d, prompt = A z, model reached only
through the billed BlackBoxAPI. Each generation is scored in one population-batched query.

Every step against txsun1997/Black-Box-Tuning bbt.py is in docs/parity.md."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from prompt_bench import progress
from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import FitContext, Method, Solution
from prompt_bench.optim.dfo import make_search
from prompt_bench.prompts.placeholders import Placeholders
from prompt_bench.prompts.projection import RandomProjection

LOSSES = ("ce", "hinge")
#: what a dev evaluation may score (method.dev_candidates), named by what each candidate is:
#: at_call: the candidate scored at the eval_every-th API call (bbt.py:501, its default serial mode);
#: generation_best: the lowest-train-loss candidate of that call's generation (bbt.py --parallel);
#: best_so_far: the lowest-train-loss candidate told so far; mean: the CMA-ES distribution's mean
DEV_CANDIDATES = ("at_call", "generation_best", "best_so_far", "mean")

#: candidates z [n, D] -> (prompts [n, L, d], per-candidate keyword tensors for api.query / api.score)
Encoder = Callable[[Tensor], "tuple[Tensor, dict[str, Tensor]]"]


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


class BBT(Method):
    access = "black_box"

    @classmethod
    def restore(cls, tensors, meta, method_cfg) -> Solution:
        # the prompt is A z already projected; z itself is kept only to read the search's result
        return super().restore({k: v for k, v in tensors.items() if k != "z"}, meta, method_cfg)

    @classmethod
    def check(cls, cfg) -> None:
        if int(cfg["budget"]) <= 0:
            raise ConfigError(f"method.budget must be a positive number of API calls, got {cfg['budget']}")
        if cfg["loss"] not in LOSSES:
            raise ConfigError(f"method.loss={cfg['loss']} is unknown: use one of {', '.join(LOSSES)}")
        for key in ("intrinsic_dim", "n_prompt_tokens", "eval_every"):
            if int(cfg[key]) <= 0:
                raise ConfigError(f"method.{key} must be positive, got {cfg[key]}")
        if float(cfg.get("hinge_margin", 2.0)) < 0:
            raise ConfigError(f"method.hinge_margin must be >= 0, got {cfg['hinge_margin']}")
        Placeholders.from_method(cfg)
        chosen = list(cfg.get("dev_candidates") or [])
        unknown = [c for c in chosen if c not in DEV_CANDIDATES]
        if not chosen or unknown:
            raise ConfigError(f"method.dev_candidates={chosen} must list some of {', '.join(DEV_CANDIDATES)}")

    @classmethod
    def placeholders(cls, cfg) -> Placeholders | None:
        return Placeholders.from_method(cfg)

    def fit(self, ctx: FitContext) -> Solution:
        cfg, api = ctx.method, ctx.blackbox
        dim, n_tokens = int(cfg["intrinsic_dim"]), int(cfg["n_prompt_tokens"])
        project = RandomProjection(
            dim, n_tokens, api.hidden_size, api.embedding_std, sigma=float(cfg["sigma"]),
            alpha=float(cfg["alpha"]), seed=ctx.seed, device=api.device,
        )
        # the optimizer's budget is in candidates (NGOpt picks its algorithm by it), not API calls
        search = make_search(ctx.optimizer, dim, budget=api.budget // self._calls_per_candidate(ctx), seed=ctx.seed,
                             sigma=float(cfg["sigma"]))
        state = run_search(ctx, self._resume(ctx, search, lambda z: (project(z), {}), api))
        best_z = torch.from_numpy(state.best_z)
        return Solution(
            prompt=project(best_z[None])[0].detach(),
            tensors={"z": best_z},
            meta={"best_dev": state.best_dev, "best_calls": state.best_calls, "projection_std": project.std,
                  "selected": state.best_source, "selection": selection_note(ctx.method)},
            budget_used=api.calls,
        )

    def _calls_per_candidate(self, ctx: FitContext) -> int:
        return 1

    def _resume(self, ctx: FitContext, search, encode: Encoder, api) -> "_SearchState":
        """The search state (a BBT variant swaps in its own, e.g. clip_tuning's thinned-network scoring)."""
        return _SearchState.resume(ctx, search, encode, api)


def selection_note(cfg) -> str:
    chosen = ", ".join(cfg.get("dev_candidates") or ["at_call"])
    return (f"the best dev score (first reached kept) among the dev candidates ({chosen}) evaluated every "
            f"{cfg['eval_every']} API calls and at the end of the budget")


def eval_hits(calls_before: int, n: int, cost: int, every: int) -> list[int]:
    """Indices of the candidates of a generation whose billing reaches a multiple of `every` API calls
    (candidate i is billed calls_before + i * cost + 1 .. calls_before + (i + 1) * cost)."""
    return [i for i in range(n) if (calls_before + i * cost) // every < (calls_before + (i + 1) * cost) // every]


def run_search(ctx: FitContext, state: "_SearchState") -> "_SearchState":
    """BBT's loop until the budget is spent: ask a generation, score it in one billed query, tell the
    losses, evaluate on dev at every `eval_every`-th call and at the end, checkpoint. Shared by the BBT family."""
    cfg, api, search = ctx.method, state.api, state.search
    cost, every = state.calls_per_candidate, int(cfg["eval_every"])
    bar = progress.bar(api.budget, "search", unit="API calls", initial=api.calls)
    while api.remaining >= cost:
        z = search.ask(min(search.popsize, api.remaining // cost))
        calls_before = api.calls
        prompts, extra = state.encode(torch.from_numpy(z))
        losses, accuracy = state.candidate_losses(prompts, extra)
        search.tell(losses.tolist())
        state.record(z, losses)
        bar.update(len(z) * cost)
        ctx.tracker.log({"train/loss": float(losses.min()), "train/accuracy": float(accuracy.max())}, step=api.calls)
        hits = eval_hits(calls_before, len(z), cost, every)
        if not hits and api.remaining < cost:
            hits = [len(z) - 1]  # the budget ends between two evaluations: its last candidate is still judged
        if hits:
            state.evaluate_dev(z, losses, hits)
        state.save(int(cfg.get("checkpoint_every", 1)))
    bar.close()
    return state


class _SearchState:
    """Losses told so far (enough to replay the search), the incumbent, and best-on-dev bookkeeping.

    `search` is anything with CMASearch's ask/tell/recommend/popsize/dim (see optim/dfo.py); `encode` turns its
    candidates into what api.query takes. Subclasses add checkpoint entries (`_extra_meta`) and
    may check the replay (`_replay`); a variant that scores candidates differently overrides
    `candidate_losses`, `dev_logits` and `calls_per_candidate`."""

    #: API calls one candidate costs; the search stops when the budget left cannot buy one more
    calls_per_candidate = 1

    def __init__(self, ctx: FitContext, search, encode: Encoder, api):
        self.ctx, self.search, self.encode, self.api = ctx, search, encode, api
        self.losses: list[list[float]] = []
        self.best_train_z: np.ndarray | None = None
        self.best_train_loss = float("inf")
        self.best_z = np.zeros(search.dim)
        self.best_dev = -float("inf")
        self.best_calls = 0
        self.best_source = "none"
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
        state.best_source = meta.get("best_source", "none")
        return state

    def _replay(self, meta: dict) -> None:
        """Re-create the search by telling it the saved losses, generation by generation, in order."""
        for generation in meta["losses"]:
            self.search.ask(len(generation))
            self.search.tell(generation)

    def _extra_meta(self) -> dict:
        return {}

    def loss(self, logits: Tensor) -> Tensor:
        """Per-candidate loss [P] of train logits [P, B, C] under method.loss."""
        return prompt_loss(logits, self.api.train_labels, str(self.ctx.method["loss"]),
                           float(self.ctx.method.get("hinge_margin", 2.0)))

    def candidate_losses(self, prompts: Tensor, extra: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(loss [P], train accuracy [P]) of P encoded candidates, bought in one billed query."""
        logits = self.api.query(prompts, **extra)
        losses = self.loss(logits)
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

    def evaluate_dev(self, z: np.ndarray, losses: Tensor, hits: list[int]) -> None:
        """Score this evaluation's dev candidates (method.dev_candidates) and keep the best on dev.

        `z`, `losses`: the generation just told; `hits`: its candidates billed at an eval_every-th call.
        As bbt.py:529, a candidate replaces the selected one only with a strictly higher dev score."""
        metric = self.ctx.primary_metric
        candidates: list[tuple[str, np.ndarray | None]] = []
        for name in self.ctx.method.get("dev_candidates") or ["at_call"]:
            if name == "at_call":
                candidates += [("at_call", z[i]) for i in hits]
            elif name == "generation_best":
                candidates.append((name, z[int(losses.argmin())]))
            elif name == "best_so_far":
                candidates.append((name, self.best_train_z))
            elif name == "mean":
                candidates.append((name, self.search.mean() if hasattr(self.search, "mean") else None))
        record = {}
        for name, candidate in candidates:
            if candidate is None:
                continue
            score = self.ctx.dev_score(self._scorer(candidate))[metric]
            record[f"dev/{metric}_{name}"] = score
            if score > self.best_dev:
                self.best_dev, self.best_z, self.best_calls = score, np.array(candidate, copy=True), self.api.calls
                self.best_source = name
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
             "best_dev": self.best_dev, "best_calls": self.best_calls, "best_source": self.best_source,
             **self._extra_meta()},
        )


METHOD = BBT
