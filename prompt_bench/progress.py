"""What a long run shows while it works: phases with their durations, and progress inside each phase.

On a terminal a phase's progress is one tqdm bar, cleared when the phase ends. Anywhere else (a sweep, Slurm,
nohup, a pipe) carriage-return bars would fill the job's log with garbage, so progress becomes plain log lines
instead: one when at least 10% more is done *and* `every_s` seconds have passed (30 by default, whichever is
rarer), with the same facts (done of total, rate, time left). `run.progress=false` turns both off.

Phase starts and ends always go to the `prompt_bench` logger, which a run's `run.log` records.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from tqdm.auto import tqdm

log = logging.getLogger("prompt_bench.progress")


@dataclass
class Settings:
    enabled: bool = True
    every_s: float = 30.0
    #: where bars go; plain lines are logged instead when this is not a terminal
    stream: object = field(default_factory=lambda: sys.stderr)


#: per-process settings, set by the run from `run.progress` (a display concern, not part of any result)
settings = Settings()


def configure(enabled: bool, every_s: float = 30.0, stream=None) -> None:
    settings.enabled, settings.every_s = bool(enabled), float(every_s)
    settings.stream = stream if stream is not None else sys.stderr


def interactive() -> bool:
    isatty = getattr(settings.stream, "isatty", None)
    return bool(isatty and isatty())


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """Progress as log lines, for output that is not a terminal."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0):
        self.total, self.desc, self.unit = max(int(total), 0), desc, unit
        self.done = self._last_done = int(initial)
        self.start = self._last_time = time.monotonic()
        self._initial = int(initial)

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        now = time.monotonic()
        step = max(1, self.total // 10)
        finished = self.done >= self.total
        if (self.done - self._last_done >= step and now - self._last_time >= settings.every_s) or (
                finished and self._last_done < self.total and now - self.start >= settings.every_s):
            self._last_done, self._last_time = self.done, now
            log.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.start
        rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        percent = 100.0 * self.done / self.total if self.total else 100.0
        eta = duration(left) if left == left else "?"
        return (f"{self.desc}: {self.done}/{self.total} {self.unit} ({percent:.0f}%), {rate:.1f} {self.unit}/s, "
                f"{eta} left")

    def close(self) -> None:
        pass


def bar(total: int, desc: str, unit: str = "it", initial: int = 0):
    """A progress display for one phase: a tqdm bar on a terminal, plain log lines elsewhere, nothing when off."""
    if not settings.enabled:
        return _Silent()
    if interactive():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, file=settings.stream,
                    dynamic_ncols=True)
    return PlainProgress(total, desc, unit, initial)


@dataclass
class Phases:
    """Wall time per phase of a run (load, data, train, dev, test, ...), for results.json and the summary."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str, what: str | None = None) -> Iterator[None]:
        logger = logging.getLogger("prompt_bench.run")
        logger.info("%s: started%s", name, f" ({what})" if what else "")
        start = time.monotonic()
        try:
            yield
        except BaseException:
            logger.info("%s: stopped after %s", name, duration(time.monotonic() - start))
            raise
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - start, 3)
        logger.info("%s: done in %s", name, duration(self.seconds[name]))
