"""The config's types and ranges, checked before anything loads.

The types are the ones conf/ declares: a key whose default in some conf/ YAML is a whole number takes only whole
numbers, a decimal default takes numbers, a true/false default takes yes/no values. So a new method's YAML is its
own schema, with no second list to keep in step. What a default cannot say (ranges, keys whose default is null,
the device) is written below, by key name.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterator

import yaml
from omegaconf import DictConfig, OmegaConf

from prompt_bench import conf_files
from prompt_bench.config_values import bf16_mode, flag, whole_number
from prompt_bench.errors import ConfigError


#: whole-number keys (by their last part) that must be at least 1; every other whole-number key must be >= 0
AT_LEAST_ONE = {
    "budget", "n_prompt_tokens", "intrinsic_dim", "batch_size", "max_steps", "eval_every", "checkpoint_every",
    "eval_batch_size", "popsize", "k", "n_train", "n_dev", "max_dev", "n_networks", "pool_size", "n_words",
    "epochs", "distill_prompts", "generations_per_layer", "max_length", "meta_steps", "tasks_per_batch",
    "inner_steps", "max_texts", "hidden_scale", "task_tokens", "patience", "student_depth", "student_layers",
    "prefix_hidden_size",
}
#: decimal keys (by their last part) that must be above 0; every other number must be >= 0 (a learning rate of 0
#: is a legitimate control: training that cannot move)
POSITIVE = {"sigma", "alpha", "temperature", "start", "max_grad_norm", "bound", "similarity_scale"}
#: decimal keys that are probabilities of dropping or holding out: 0 <= p < 1
FRACTION = {"dropout", "clip_rate", "dev_fraction"}
#: keys whose default is null, so conf/ cannot say their type: (kind, may it be null)
NULL_DEFAULTS = {
    "method.gdfo.student_depth": "int", "setting.epochs": "int", "setting.eval_every": "int",
    "setting.patience": "int", "optimizer.max_grad_norm": "float", "optimizer.bound": "float",
}
#: keys with a vocabulary of their own, checked by their own reader whatever their default's type
OWN_READERS = {"compute.bf16": bf16_mode}
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
#: parts of the config that are not settings of a run (Hydra's own; the task is checked by TaskSpec)
UNCHECKED = ("hydra", "task", "defaults")


def check(cfg: DictConfig) -> None:
    """Refuse, by name and with the fix, the first value of the wrong type or out of range."""
    declared = declared_kinds()
    values = OmegaConf.to_container(cfg, resolve=True)
    for key, value in _leaves(values):
        if key.split(".")[0] in UNCHECKED:
            continue
        kinds = declared.get(key) or ({NULL_DEFAULTS[key]} if key in NULL_DEFAULTS else set())
        if value is None:
            continue  # null means "not set" everywhere a default is null; code that needs a value says so
        if key in OWN_READERS:
            OWN_READERS[key](key, value)
            continue
        _check_value(key, value, kinds)
    device = str(OmegaConf.select(cfg, "compute.device", default="auto"))
    if not DEVICE.match(device):
        raise ConfigError(f"compute.device={device} is not a device: use auto, cpu, cuda, cuda:N or mps")
    tokens = OmegaConf.select(cfg, "compute.max_tokens_per_forward", default="auto")
    if tokens != "auto":
        whole_number("compute.max_tokens_per_forward", tokens, 1, example="2048 (or auto)")


def _check_value(key: str, value: Any, kinds: set[str]) -> None:
    leaf = key.rsplit(".", 1)[-1]
    if kinds == {"bool"}:
        flag(key, value)
    elif kinds == {"int"}:
        whole_number(key, value, 1 if leaf in AT_LEAST_ONE else 0)
    elif kinds and kinds <= {"int", "float"}:
        number = _number(key, value)
        if leaf in POSITIVE and number <= 0:
            raise ConfigError(f"{key}={value} must be above 0")
        if number < 0:
            raise ConfigError(f"{key}={value} must be at least 0")
        if leaf in FRACTION and not 0 <= number < 1:
            raise ConfigError(f"{key}={value} must be at least 0 and below 1")
        if leaf in AT_LEAST_ONE and number < 1:
            raise ConfigError(f"{key}={value} must be at least 1")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}={value} is not a number: use e.g. {key}=0.1")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value} is not a number: use e.g. {key}=0.1") from None


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


@functools.lru_cache(maxsize=1)
def declared_kinds() -> dict[str, set[str]]:
    """Every key a conf/ YAML gives a literal default, with the kinds of those defaults (int, float, bool, str...)."""
    kinds: dict[str, set[str]] = {}
    for file in sorted(conf_files.CONF_DIR.rglob("*.yaml")):
        relative = file.relative_to(conf_files.CONF_DIR)
        if relative.parts[0] in ("hydra", "task"):
            continue
        text = file.read_text(encoding="utf-8")
        content = yaml.safe_load(text) or {}
        global_package = len(relative.parts) == 1 or "# @package _global_" in text
        prefix = "" if global_package else relative.parts[0] + "."
        for key, value in _leaves({k: v for k, v in content.items() if k not in ("defaults", "hydra")}, prefix):
            if value is None or (isinstance(value, str) and "${" in value):
                continue
            kinds.setdefault(key, set()).add(type(value).__name__)
    return kinds


class Section(dict):
    """A config section (`method`, `optimizer`) with every value in the type conf/ declares for its key, read as
    `cfg.budget` or `cfg["budget"]`. Built once where a run hands the section to a method, so the method reads
    typed values instead of casting each one where it uses it. A dict, so it serialises as the plain config."""

    def __init__(self, values: dict[str, Any], path: str):
        declared = declared_kinds()
        super().__init__({key: _typed(f"{path}.{key}", value, declared) for key, value in values.items()})
        self.__dict__["_path"] = path

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{self._path} has no key '{name}'") from None


def section(values: dict[str, Any] | None, path: str) -> Section:
    """`values` as a typed Section (already one: returned as it is)."""
    if isinstance(values, Section):
        return values
    return Section(dict(values or {}), path)


def _typed(key: str, value: Any, declared: dict[str, set[str]]) -> Any:
    if isinstance(value, dict):
        return Section(value, key)
    kinds = declared.get(key) or ({NULL_DEFAULTS[key]} if key in NULL_DEFAULTS else set())
    if value is None or isinstance(value, (list, tuple)):
        return value
    if kinds == {"bool"}:
        return flag(key, value)
    if kinds == {"int"} and not isinstance(value, bool):
        return int(value)
    if kinds and kinds <= {"int", "float"} and not isinstance(value, bool):
        return float(value)
    return value
