"""Black-Box Tuning (Sun et al., ICML 2022): CMA-ES over z in R^d, prompt = A z, model reached only
through the billed BlackBoxAPI. Each generation is scored in one population-batched query; the loop, the
scoring and best-on-dev selection are methods/search_loop.py's, shared by the BBT family.

Every step against txsun1997/Black-Box-Tuning bbt.py is in docs/parity.md."""

from __future__ import annotations

import torch

from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import BlackBoxContext, Method, Solution
from prompt_bench.methods.search_loop import DEV_CANDIDATES, Scoring, run_search, selection_note
from prompt_bench.optim.dfo import make_search
from prompt_bench.prompts.placeholders import Placeholders
from prompt_bench.prompts.projection import RandomProjection

LOSSES = ("ce", "hinge")


class BBT(Method):
    access = "black_box"

    @classmethod
    def restore(cls, tensors, meta, method_cfg) -> Solution:
        # the prompt is A z already projected; z itself is kept only to read the search's result
        return super().restore({k: v for k, v in tensors.items() if k != "z"}, meta, method_cfg)

    @classmethod
    def check(cls, cfg) -> None:
        # sizes and margins are config_schema's (types and ranges from conf/); here only what it cannot know
        if cfg["loss"] not in LOSSES:
            raise ConfigError(f"method.loss={cfg['loss']} is unknown: use one of {', '.join(LOSSES)}")
        Placeholders.from_method(cfg)
        chosen = list(cfg.get("dev_candidates") or [])
        unknown = [c for c in chosen if c not in DEV_CANDIDATES]
        if not chosen or unknown:
            raise ConfigError(f"method.dev_candidates={chosen} must list some of {', '.join(DEV_CANDIDATES)}")

    @classmethod
    def placeholders(cls, cfg) -> Placeholders | None:
        return Placeholders.from_method(cfg)

    def fit(self, ctx: BlackBoxContext) -> Solution:
        cfg, api = ctx.method, ctx.blackbox
        dim, n_tokens = cfg.intrinsic_dim, cfg.n_prompt_tokens
        project = RandomProjection(
            dim, n_tokens, api.hidden_size, api.embedding_std, sigma=cfg.sigma,
            alpha=cfg.alpha, seed=ctx.seed, device=api.device,
        )
        scoring = self._scoring(ctx, api)
        # the optimizer's budget is in candidates (NGOpt picks its algorithm by it), not API calls
        search = make_search(ctx.optimizer, dim, budget=api.budget // scoring.calls_per_candidate, seed=ctx.seed,
                             sigma=cfg.sigma)
        state = run_search(ctx, search, lambda z: (project(z), {}), scoring)
        best_z = torch.from_numpy(state.best_z)
        return Solution(
            prompt=project(best_z[None])[0].detach(),
            tensors={"z": best_z},
            meta={"best_dev": state.best_dev, "best_calls": state.best_calls, "projection_std": project.std,
                  "selected": state.best_source, "selection": selection_note(ctx.method)},
            budget_used=api.calls,
        )

    def _scoring(self, ctx: BlackBoxContext, api) -> Scoring:
        """How a candidate is bought and judged (a BBT variant brings its own, e.g. Clip-Tuning's thinned networks)."""
        return Scoring(ctx, api)


METHOD = BBT
