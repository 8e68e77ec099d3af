"""setting=fewglue: a fixed number of examples in total (FewGLUE / PET: 32), stratified by class, and a dev set
of the same kind for best-on-dev selection. A task whose mirror has a fixed train set and a dev pool (boolq)
trains on that set, and its dev comes from the pool."""

from __future__ import annotations

from prompt_bench.errors import ConfigError
from prompt_bench.settings.base import Setting
from prompt_bench.tasks import loading, sampling


class FewGLUE(Setting):
    name = "fewglue"

    def check_options(self) -> None:
        for key in ("n_train", "n_dev"):
            if int(self.options[key]) <= 0:
                raise ConfigError(f"setting.{key} must be a positive number of examples in total, got {self.options[key]}")

    def split(self, task, pool, root):
        n_train, n_dev = int(self.options.n_train), int(self.options.n_dev)
        dev_pool = loading.load_dev_pool(task, root)
        if dev_pool is None:
            train, dev = sampling.fixed_total(pool, n_train, n_dev, self.seed, task.num_classes)
            return train, dev, None
        # A fixed train set (boolq: the FewGLUE 32) is all train; dev comes from the pool held out of test.
        train, _ = sampling.fixed_total(pool, n_train, 0, self.seed, task.num_classes)
        _, dev = sampling.fixed_total(dev_pool.examples, 0, n_dev, self.seed, task.num_classes)
        return train, dev, dev_pool
