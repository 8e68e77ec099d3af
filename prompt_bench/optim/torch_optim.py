"""torch optimizers from the `optimizer` config group, their learning-rate schedule and gradient clipping, and
their state as plain tensors / JSON (for safetensors checkpoints).

Every gradient method trains through `methods/training.py`, which builds all three from here, so a schedule or
a clipping norm set in `conf/optimizer/*.yaml` applies to prompt tuning, P-tuning v2, Dynamic Prompting,
fine-tuning and MetaPT's downstream stage alike. Schedules are transformers' (`get_scheduler`), stepped once per
optimizer step as the Hugging Face Trainer and the reference codes do: the first update uses the schedule's value
at step 0 (0 for a warm-up), the k-th its value at step k-1.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from prompt_bench.errors import ConfigError

#: transformers schedule names we accept (each needs only warm-up and total steps)
SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")
ADAFACTORS = ("torch", "transformers")


def check(cfg: Mapping[str, Any]) -> None:
    """Refuse bad schedule / clipping / optimizer settings before anything is loaded."""
    name = str(cfg["name"])
    if name not in ("adamw", "adafactor"):
        raise ConfigError(f"unknown gradient optimizer '{name}': use optimizer=adamw or optimizer=adafactor")
    schedule, warmup = str(cfg.get("schedule", "constant")), int(cfg.get("warmup_steps", 0) or 0)
    if schedule not in SCHEDULES:
        raise ConfigError(f"optimizer.schedule={schedule} is not one of {', '.join(SCHEDULES)}")
    if warmup < 0:
        raise ConfigError(f"optimizer.warmup_steps must be zero or positive, got {warmup}")
    if schedule == "constant" and warmup:
        raise ConfigError("optimizer.schedule=constant has no warm-up: use optimizer.schedule=constant_with_warmup "
                          f"for optimizer.warmup_steps={warmup}")
    norm = cfg.get("max_grad_norm")
    if norm is not None and not float(norm) > 0:
        raise ConfigError(f"optimizer.max_grad_norm must be positive (or null: no clipping), got {norm}")
    if name == "adafactor" and str(cfg.get("implementation", "torch")) not in ADAFACTORS:
        raise ConfigError(f"optimizer.implementation={cfg.get('implementation')} is not one of {', '.join(ADAFACTORS)}")


def build(cfg: Mapping[str, Any], params: list[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer `cfg` names over `params`, at the method's learning rate and weight decay (conf/optimizer/
    describes the algorithm; the rates are the method's own hyperparameters, in conf/method/)."""
    name, lr, wd = str(cfg["name"]), float(lr), float(weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adafactor":
        if str(cfg.get("implementation", "torch")) == "transformers":
            # T5 / Lester et al. / Xianjun-Yang/DPT: transformers' Adafactor with a fixed step size (no relative
            # step, no parameter scaling): update = lr * clipped(g / sqrt(v_hat)), beta2_t = 1 - t^-0.8.
            from transformers.optimization import Adafactor

            return Adafactor(params, lr=lr, weight_decay=wd, scale_parameter=bool(cfg.get("scale_parameter", False)),
                             relative_step=bool(cfg.get("relative_step", False)), warmup_init=False)
        return torch.optim.Adafactor(params, lr=lr, weight_decay=wd)
    raise ConfigError(f"unknown gradient optimizer '{name}': use optimizer=adamw or optimizer=adafactor")


def build_schedule(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int):
    """transformers' schedule for `optimizer`, or None for a constant rate without warm-up (our default: the
    optimizer then runs exactly as it did before schedules existed)."""
    schedule, warmup = str(cfg.get("schedule", "constant")), int(cfg.get("warmup_steps", 0) or 0)
    if schedule == "constant" and not warmup:
        return None
    from transformers import get_scheduler

    return get_scheduler(schedule, optimizer, num_warmup_steps=warmup, num_training_steps=int(total_steps))


def clip(cfg: Mapping[str, Any], params: list[torch.Tensor]) -> float | None:
    """Clip the gradients' global L2 norm to optimizer.max_grad_norm (torch.nn.utils.clip_grad_norm_, as the HF
    Trainer and DPT do); returns the norm before clipping, or None without clipping."""
    norm = cfg.get("max_grad_norm")
    if norm is None:
        return None
    with_grad = [p for p in params if p.grad is not None]
    return float(torch.nn.utils.clip_grad_norm_(with_grad, float(norm)))


def schedule_state(schedule) -> dict[str, Any]:
    """The schedule's position as JSON (its lambdas are rebuilt from the config, not saved)."""
    if schedule is None:
        return {}
    state = schedule.state_dict()
    return {k: state[k] for k in ("last_epoch", "_step_count", "base_lrs", "_last_lr") if k in state}


def load_schedule_state(schedule, optimizer: torch.optim.Optimizer, state: Mapping[str, Any] | None) -> None:
    if schedule is None or not state:
        return
    full = schedule.state_dict()
    full.update(state)
    schedule.load_state_dict(full)
    for group, lr in zip(optimizer.param_groups, state["_last_lr"]):
        group["lr"] = lr  # the optimizer's groups were rebuilt at their base rate


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


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
