"""Prompts and states on disk: safetensors for tensors, JSON for metadata. Nothing is unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from prompt_bench.errors import ArtifactError


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


def load_tensors(path: str | Path, fix: str = "write it again or point to another file") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The pair written by `save_tensors`. A truncated or foreign file raises ArtifactError naming the file and
    `fix` (what the caller's user should do about it), never the parser's own exception."""
    base = Path(path).with_suffix("")
    tensors_file = base.with_suffix(".safetensors")
    if not tensors_file.is_file():
        raise FileNotFoundError(tensors_file)
    meta_file = base.with_suffix(".json")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{meta_file} is not valid JSON ({_reason(err)}): {fix}") from None
    try:
        return load_file(str(tensors_file)), meta
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{tensors_file} is not a readable safetensors file ({_reason(err)}): {fix}") from None


def tensor_shapes(path: str | Path, fix: str = "write it again or point to another file") -> dict[str, list[int]]:
    """Each tensor's shape from the file's header alone (no tensor is read), for checks before a model loads."""
    from safetensors import safe_open

    tensors_file = Path(path).with_suffix("").with_suffix(".safetensors")
    try:
        with safe_open(str(tensors_file), framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{tensors_file} is not a readable safetensors file ({_reason(err)}): {fix}") from None


def _reason(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:120]




