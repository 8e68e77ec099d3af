"""setting=full_data: what a whole train split changes for the methods.

Gradient methods may count their training in epochs instead of steps, evaluate on dev at their own interval,
and stop early when dev stops improving. Black-box methods keep their API budget, but an API call that scored
tens of thousands of examples would make one generation cost hours, so every call scores the same fixed,
seeded sample of the train split (`setting.black_box_train`), the way a paying API user would sample it.
"""

from __future__ import annotations

import math
import random
from typing import Any

from omegaconf import DictConfig

from prompt_bench.errors import ConfigError
from prompt_bench.settings.base import Setting
from prompt_bench.tasks import sampling

_POSITIVE_OR_NULL = ("epochs", "eval_every", "patience", "black_box_train")


def check(setting: DictConfig) -> None:
    for key in _POSITIVE_OR_NULL:
        value = setting.get(key)
        if value is not None and int(value) <= 0:
            raise ConfigError(f"setting.{key} must be a positive number or null, got {value}")


def schedule(setting: DictConfig, method_cfg: dict[str, Any], n_train: int) -> dict[str, Any]:
    """The gradient method's config with `setting.epochs` turned into max_steps and `setting.eval_every` applied."""
    out = dict(method_cfg)
    if "max_steps" not in out:
        return out
    if setting.get("epochs") is not None:
        out["max_steps"] = int(setting.epochs) * math.ceil(n_train / int(out["batch_size"]))
    if setting.get("eval_every") is not None:
        out["eval_every"] = int(setting.eval_every)
    return out


def black_box_sample(setting: DictConfig, examples: list, seed: int) -> list:
    """The train examples every API call scores: a seeded sample of `setting.black_box_train`, in split order."""
    size = setting.get("black_box_train")
    if size is None or int(size) >= len(examples):
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), int(size)))
    return [examples[i] for i in keep]


class FullData(Setting):
    """The official train split minus a held-out dev slice; test is the official validation split."""

    name = "full_data"

    def check_options(self) -> None:
        check(self.options)

    def split(self, task, pool, root):
        train, dev = sampling.full_data(pool, self.seed, float(self.options.dev_fraction), int(self.options.max_dev))
        return train, dev, None

    def train_examples(self, data, encoding):
        return black_box_sample(self.options, data.train, self.seed) if encoding.black_box else data.train

    def method_config(self, method_cfg, gradient, n_train):
        return schedule(self.options, method_cfg, n_train) if gradient else method_cfg

    @property
    def patience(self):
        return self.options.get("patience")
