"""A run's resumable state: one safetensors + JSON pair in `<run>/checkpoint/`, replaced atomically."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from prompt_bench.artifacts import load_tensors, save_tensors


class Checkpoint:
    """Also keeps the run's wall clock across segments: a resumed run reports the time of every segment up to
    its last checkpoint, not just the last segment's (work lost after that checkpoint is redone, so counted once)."""

    def __init__(self, run_dir: Path):
        self.base = Path(run_dir) / "checkpoint" / "state"
        self._clock = time.perf_counter()
        self.earlier_s = 0.0
        if self.exists():
            self.earlier_s = float(self.load()[1].get("wall_time_s", 0.0))

    def wall_time_s(self) -> float:
        return self.earlier_s + time.perf_counter() - self._clock

    def exists(self) -> bool:
        return self.base.with_suffix(".safetensors").is_file()

    def save(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.base.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(self.base, tensors, {**meta, "wall_time_s": round(self.wall_time_s(), 2)})

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        if not self.exists():
            return None
        # A kill mid-write cannot truncate it (it is replaced atomically), but a full disk or a copy can.
        return load_tensors(self.base, fix="run.restart=true starts the run again (the interrupted folder is kept aside)")
