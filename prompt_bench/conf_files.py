"""Named configs read outside a Hydra composition (a method's second model, another task): the same YAML
files under conf/ that `model=<name>` and `task=<name>` compose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from prompt_bench.errors import ConfigError
from prompt_bench.tasks.spec import TaskSpec

def _conf_dir() -> Path:
    """conf/ inside an installed wheel (prompt_bench/conf), else at the top of the checkout (editable install)."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return packaged if (packaged / "config.yaml").is_file() else here.parent / "conf"


CONF_DIR = _conf_dir()


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def model_config(name: str) -> dict[str, Any] | None:
    """conf/model/<name>.yaml as a dict, or None when there is no such config (or it is the `local` template)."""
    file = CONF_DIR / "model" / f"{name}.yaml"
    if not name or name == "local" or not file.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.load(file), resolve=True)


def task_spec(name: str, key: str) -> TaskSpec:
    """conf/task/<name>.yaml as a TaskSpec; `key` names the setting that asked, for the error."""
    file = CONF_DIR / "task" / f"{name}.yaml"
    if not file.is_file():
        raise ConfigError(f"{key} names an unknown task '{name}': use one of {', '.join(names('task'))}")
    return TaskSpec.from_config(OmegaConf.to_container(OmegaConf.load(file), resolve=True))


def task_default_setting(name: str) -> str | None:
    """The setting conf/task/<name>.yaml chooses for itself (`override /setting@_global_.setting: ...`), if any."""
    file = CONF_DIR / "task" / f"{name}.yaml"
    if not file.is_file():
        return None
    for entry in OmegaConf.load(file).get("defaults", []) or []:
        if isinstance(entry, str) or not hasattr(entry, "items"):
            continue
        for key, value in entry.items():
            if str(key).startswith("override /setting"):
                return str(value)
    return None
