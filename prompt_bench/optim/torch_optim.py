"""torch optimizers from the `optimizer` config group, and their state as plain tensors (for safetensors)."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from prompt_bench.errors import ConfigError


def build(cfg: Mapping[str, Any], params: list[torch.Tensor]) -> torch.optim.Optimizer:
    name, lr, wd = str(cfg["name"]), float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adafactor":
        return torch.optim.Adafactor(params, lr=lr, weight_decay=wd)
    raise ConfigError(f"unknown gradient optimizer '{name}': use optimizer=adamw or optimizer=adafactor")


def state_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optim.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_state_tensors(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)
