"""A run's resumable state: one safetensors + JSON pair in `<run>/checkpoint/`, replaced atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prompt_bench.artifacts import load_tensors, save_tensors


class Checkpoint:
    def __init__(self, run_dir: Path):
        self.base = Path(run_dir) / "checkpoint" / "state"

    def exists(self) -> bool:
        return self.base.with_suffix(".safetensors").is_file()

    def save(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.base.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(self.base, tensors, meta)

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        if not self.exists():
            return None
        return load_tensors(self.base)
