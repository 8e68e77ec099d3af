"""Derivative-free search through an ask/tell interface, one generation at a time.

`optimizer=cma` (and `diag_cma`) drive pycma's `CMAEvolutionStrategy` directly with the options
txsun1997/Black-Box-Tuning passes it (bbt.py:710-718: x0 = 0, sigma, popsize, seed, no bounds unless
`bound` is set), so a seed gives the reference's candidate sequence. The other optimizers are nevergrad's.

A search is a deterministic function of its seed and of the losses it was told, so resuming only
needs the losses: replaying them re-creates the exact optimizer state without pickling anything.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import cma
import nevergrad as ng
import numpy as np

from prompt_bench.errors import ConfigError

# Our names -> nevergrad optimizer factories (all ask/tell, all seeded by the parametrization's
# random state). Population-based ones get the config's popsize; the others are asked popsize
# candidates per generation all the same, so every optimizer is billed and batched identically.
NEVERGRAD = {
    "de": lambda popsize: ng.families.DifferentialEvolution(popsize=popsize),
    "pso": lambda popsize: ng.families.ConfPSO(popsize=popsize),
    "oneplusone": lambda popsize: ng.optimizers.OnePlusOne,
    "ngopt": lambda popsize: ng.optimizers.NGOpt,
    "random_search": lambda popsize: ng.optimizers.RandomSearch,
}
#: pycma, driven directly: our name -> extra pycma options
PYCMA = {"cma": {}, "diag_cma": {"CMA_diagonal": True}}
OPTIMIZERS = (*PYCMA, *NEVERGRAD)

# pycma warns when told fewer solutions than popsize; only a run's last, budget-cut generation is
warnings.filterwarnings("ignore", message="The number of solutions passed to `tell` should.*")


def make_search(cfg: Mapping[str, Any], dim: int, budget: int, seed: int, sigma: float,
                stream: np.random.RandomState | None = None) -> "CMASearch | AskTellSearch":
    """The search `optimizer=<name>` asks for, starting at z = 0 with step size `sigma` (the method's
    `method.sigma`: it also scales the method's projection). `stream`: the normal-sample source a pycma search
    draws from (several searches may share one, as deepbbt.py's per-layer CMA-ES share numpy's global stream)."""
    name = str(cfg["name"])
    if name in PYCMA:
        return CMASearch(cfg, dim, budget, seed, sigma, stream)
    if name in NEVERGRAD:
        return AskTellSearch(cfg, dim, budget, seed, sigma)
    raise ConfigError(f"unknown derivative-free optimizer '{name}': use one of {', '.join(OPTIMIZERS)}")


class Search:
    """What the search loop (methods/search_loop.py) asks of a search, besides ask / tell / recommend / mean and
    `popsize`, `dim`: what its checkpoint must hold beyond the told losses, and the bracket around a replay of
    them (a composite search, e.g. BBTv2's layer by layer, checks its schedule against the saved one)."""

    def checkpoint_meta(self) -> dict[str, Any]:
        return {}

    def begin_replay(self, meta: dict[str, Any]) -> None:
        """Before the saved generations are asked and told again."""

    def end_replay(self, meta: dict[str, Any]) -> None:
        """After they were."""


class CMASearch(Search):
    """pycma's CMA-ES with bbt.py's options. Seeded through a private RandomState(seed) used as pycma's
    `randn` (pycma's own `seed` option would reseed numpy's global stream); its draws are the ones
    `np.random.seed(seed)` gives the reference's global stream, so the candidates are the same."""

    def __init__(self, cfg: Mapping[str, Any], dim: int, budget: int, seed: int, sigma: float,
                 stream: np.random.RandomState | None = None):
        self.dim = dim
        self.popsize = int(cfg["popsize"])
        self.stream = stream if stream is not None else np.random.RandomState(seed)
        options = {"seed": np.nan, "randn": self.stream.randn, "popsize": self.popsize,
                   "maxiter": max(1, budget // self.popsize), "verbose": -9, **PYCMA[str(cfg["name"])]}
        bound = cfg.get("bound")
        if bound:
            options["bounds"] = [-float(bound), float(bound)]
        self.es = cma.CMAEvolutionStrategy(dim * [0.0], float(sigma), inopts=options)
        self._pending: list[np.ndarray] = []
        self._injected: np.ndarray | None = None

    def inject(self, z: np.ndarray) -> None:
        """Make `z` the first candidate of the next generation, inside CMA-ES's own sampled batch
        (pycma's `inject`): the generation keeps popsize members and updates the distribution as usual."""
        self._injected = np.asarray(z, dtype=float).copy()
        self.es.inject([self._injected], force=True)

    def ask(self, n: int | None = None) -> np.ndarray:
        """[n, dim] candidates (a whole generation by default)."""
        n = n or self.popsize
        self._pending = self.es.ask(n) if n != self.popsize else self.es.ask()
        self._injected = None
        return np.stack(self._pending)

    def tell(self, losses) -> None:
        if len(losses) != len(self._pending):
            raise ValueError(f"told {len(losses)} losses for {len(self._pending)} candidates")
        # pycma refuses fewer than mu solutions; only a run's last, budget-cut generation can be that short,
        # and nothing is asked after it
        if len(losses) >= self.es.sp.weights.mu:
            self.es.tell(self._pending, [float(x) for x in losses])
        self._pending = []

    @property
    def updates(self) -> int:
        """Generations that updated the distribution (pycma's iteration count)."""
        return int(self.es.countiter)

    def mean(self) -> np.ndarray:
        """The distribution's mean (what CMA-ES believes is best now)."""
        return np.asarray(self.es.mean, dtype=float).copy()

    def recommend(self) -> np.ndarray:
        """The lowest-loss candidate told so far (pycma's `result.xbest`); 0 before any."""
        best = self.es.result.xbest
        return np.zeros(self.dim) if best is None else np.asarray(best, dtype=float).copy()


class AskTellSearch(Search):
    """A nevergrad optimizer behind the same ask/tell interface."""

    def __init__(self, cfg: Mapping[str, Any], dim: int, budget: int, seed: int, sigma: float):
        self.dim = dim
        self.popsize = int(cfg["popsize"])
        parametrization = ng.p.Array(init=np.zeros(dim)).set_mutation(sigma=sigma)
        bound = cfg.get("bound")
        if bound:
            parametrization.set_bounds(-float(bound), float(bound))
        parametrization.random_state = np.random.RandomState(seed)
        name = str(cfg["name"])
        if name not in NEVERGRAD:
            raise ConfigError(f"unknown nevergrad optimizer '{name}': use one of {', '.join(NEVERGRAD)}")
        self._optimizer = NEVERGRAD[name](self.popsize)(parametrization, budget=budget, num_workers=self.popsize)
        self._pending: list = []

    def ask(self, n: int | None = None) -> np.ndarray:
        """[n, dim] candidates (a whole generation by default)."""
        self._pending = [self._optimizer.ask() for _ in range(n or self.popsize)]
        return np.stack([c.value for c in self._pending])

    def inject(self, z: np.ndarray) -> None:
        """Make `z` the first candidate of the next ask (nevergrad's suggest; every optimizer here takes it)."""
        self._optimizer.suggest(np.asarray(z, dtype=float))

    def tell(self, losses) -> None:
        if len(losses) != len(self._pending):
            raise ValueError(f"told {len(losses)} losses for {len(self._pending)} candidates")
        for candidate, loss in zip(self._pending, losses):
            self._optimizer.tell(candidate, float(loss))
        self._pending = []

    def mean(self) -> np.ndarray | None:
        """No distribution to report: nevergrad's optimizers here are not all distribution-based."""
        return None

    def recommend(self) -> np.ndarray:
        """nevergrad's recommendation (for these optimizers: the best point told so far)."""
        return np.asarray(self._optimizer.provide_recommendation().value)
