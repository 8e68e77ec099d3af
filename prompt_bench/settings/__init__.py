"""The settings a run can be in (one conf/setting/<name>.yaml and one module each): how a task's data is split,
encoded and scored. `build(cfg)` gives the run loop its setting; nothing else asks which setting it is."""

from __future__ import annotations

from omegaconf import DictConfig

from prompt_bench.errors import ConfigError
from prompt_bench.settings.base import Data, Encoding, Prepared, Setting
from prompt_bench.settings.few_shot import FewShot
from prompt_bench.settings.fewglue import FewGLUE
from prompt_bench.settings.full_data import FullData
from prompt_bench.settings.multitask import Multitask

SETTINGS: dict[str, type[Setting]] = {cls.name: cls for cls in (FewShot, FewGLUE, FullData, Multitask)}

__all__ = ["Data", "Encoding", "Prepared", "Setting", "SETTINGS", "build"]


def build(cfg: DictConfig) -> Setting:
    name = str(cfg.setting.name)
    if name not in SETTINGS:
        raise ConfigError(f"unknown setting '{name}': use setting={', setting='.join(SETTINGS)}")
    return SETTINGS[name](cfg)
