"""Derivative-free search through nevergrad's ask/tell interface, one generation at a time.

A search is a deterministic function of its seed and of the losses it was told, so resuming only
needs the losses: replaying them re-creates the exact optimizer state without pickling anything.
"""

from __future__ import annotations

from typing import Any, Mapping

import nevergrad as ng
import numpy as np

from prompt_bench.errors import ConfigError

# Our names -> nevergrad optimizer factories (all ask/tell, all seeded by the parametrization's
# random state). Population-based ones get the config's popsize; the others are asked popsize
# candidates per generation all the same, so every optimizer is billed and batched identically.
OPTIMIZERS = {
    "cma": lambda popsize: ng.optimizers.ParametrizedCMA(popsize=popsize, random_init=False),
    "diag_cma": lambda popsize: ng.optimizers.ParametrizedCMA(popsize=popsize, diagonal=True, random_init=False),
    "de": lambda popsize: ng.families.DifferentialEvolution(popsize=popsize),
    "pso": lambda popsize: ng.families.ConfPSO(popsize=popsize),
    "oneplusone": lambda popsize: ng.optimizers.OnePlusOne,
    "ngopt": lambda popsize: ng.optimizers.NGOpt,
    "random_search": lambda popsize: ng.optimizers.RandomSearch,
}


def _build(name: str, popsize: int):
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown derivative-free optimizer '{name}': use one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](popsize)


class AskTellSearch:
    def __init__(self, cfg: Mapping[str, Any], dim: int, budget: int, seed: int):
        self.dim = dim
        self.popsize = int(cfg.get("popsize", 20))
        sigma = float(cfg.get("sigma", 1.0))
        parametrization = ng.p.Array(init=np.zeros(dim)).set_mutation(sigma=sigma)
        bound = cfg.get("bound")
        if bound:
            parametrization.set_bounds(-float(bound), float(bound))
        parametrization.random_state = np.random.RandomState(seed)
        self._optimizer = _build(str(cfg["name"]), self.popsize)(parametrization, budget=budget, num_workers=self.popsize)
        self._pending: list = []

    def ask(self, n: int | None = None) -> np.ndarray:
        """[n, dim] candidates (a whole generation by default)."""
        self._pending = [self._optimizer.ask() for _ in range(n or self.popsize)]
        return np.stack([c.value for c in self._pending])

    def suggest(self, z: np.ndarray) -> None:
        """Make `z` the first candidate of the next ask (nevergrad's suggest; every optimizer here takes it)."""
        self._optimizer.suggest(np.asarray(z, dtype=float))

    def tell(self, losses) -> None:
        if len(losses) != len(self._pending):
            raise ValueError(f"told {len(losses)} losses for {len(self._pending)} candidates")
        for candidate, loss in zip(self._pending, losses):
            self._optimizer.tell(candidate, float(loss))
        self._pending = []

    def recommend(self) -> np.ndarray:
        return np.asarray(self._optimizer.provide_recommendation().value)
