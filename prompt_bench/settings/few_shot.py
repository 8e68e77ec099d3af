"""setting=few_shot: k examples per class for train and k per class for dev, both drawn by seed from the task's
train split (the BBT / LM-BFF protocol); test is the official validation split."""

from __future__ import annotations

from prompt_bench.errors import ConfigError
from prompt_bench.settings.base import Setting
from prompt_bench.tasks import sampling


class FewShot(Setting):
    name = "few_shot"

    def check_options(self) -> None:
        if int(self.options.k) <= 0:
            raise ConfigError(f"setting.k must be a positive number of examples per class, got {self.options.k}")

    def split(self, task, pool, root):
        train, dev = sampling.few_shot(pool, int(self.options.k), self.seed, task.num_classes)
        return train, dev, None
