"""Prompts and states on disk: safetensors for tensors, JSON for metadata. Nothing is unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write `<path>.safetensors` and `<path>.json` (written to temp names first, so a kill leaves the old pair)."""
    base = Path(path).with_suffix("")
    tmp = base.with_name(base.name + ".tmp.safetensors")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, base.with_suffix(".safetensors"))
    _atomic_json(base.with_suffix(".json"), meta)
    return base.with_suffix(".safetensors")


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    base = Path(path).with_suffix("")
    tensors_file = base.with_suffix(".safetensors")
    if not tensors_file.is_file():
        raise FileNotFoundError(tensors_file)
    meta_file = base.with_suffix(".json")
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return load_file(str(tensors_file)), meta




