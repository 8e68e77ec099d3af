"""Best-on-dev selection, one rule for every method that trains: a candidate replaces the kept one only with a
strictly higher dev score, so on ties the first reached is kept (bbt.py:529's `>`; the LM-BFF / BBT protocol).

Gradient training offers its parameters after each dev evaluation, the derivative-free search each dev
candidate of an evaluation; both keep the kept candidate's test score for budget curves (`run.track_test`)
only until a better one replaces it, and never select on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class BestOnDev:
    score: float = -float("inf")
    step: int = 0  # optimizer steps or API calls when it was reached
    source: str = "none"  # which kind of candidate it was (the search's dev candidates name themselves)
    stale: int = 0  # offers since the last improvement (gradient training's patience counts dev evaluations)
    _test: float | None = None

    def offer(self, score: float, step: int, source: str = "") -> bool:
        """Keep this candidate if its dev score is strictly higher; True when it was kept."""
        if score > self.score:
            self.score, self.step, self.source, self.stale, self._test = score, step, source or self.source, 0, None
            return True
        self.stale += 1
        return False

    def test_score(self, compute: Callable[[], float]) -> float:
        """The kept candidate's test score, computed once per kept candidate."""
        if self._test is None:
            self._test = compute()
        return self._test
