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


def search_dirs() -> list[Path]:
    """Where named configs are looked up: inside a run, Hydra's search path (a user's `--config-dir` or
    `hydra.searchpath` folders first, as Hydra composes them), then ours."""
    dirs: list[Path] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            dirs = [Path(source.path) for source in HydraConfig.get().runtime.config_sources
                    if source.schema == "file" and source.path]
    except Exception:  # noqa: BLE001 - outside a Hydra run there is only ours
        dirs = []
    return [*[d for d in dirs if d.resolve() != CONF_DIR.resolve()], CONF_DIR]


def find(group: str, name: str) -> Path | None:
    for folder in search_dirs():
        file = folder / group / f"{name}.yaml"
        if file.is_file():
            return file
    return None


def names(group: str) -> list[str]:
    return sorted({p.stem for folder in search_dirs() for p in (folder / group).glob("*.yaml")})


def _load(file: Path) -> dict[str, Any]:
    content = OmegaConf.to_container(OmegaConf.load(file), resolve=True)
    content.pop("defaults", None)  # a group config's defaults list is Hydra's business, not a value
    return content


def model_config(name: str) -> dict[str, Any] | None:
    """conf/model/<name>.yaml as a dict, or None when there is no such config (or it is the `local` template)."""
    file = find("model", name) if name and name != "local" else None
    return None if file is None else _load(file)


def task_spec(name: str, key: str) -> TaskSpec:
    """conf/task/<name>.yaml (or a user's task/<name>.yaml on the search path) as a TaskSpec; `key` names the
    setting that asked, for the error."""
    file = find("task", name)
    if file is None:
        raise ConfigError(f"{key} names an unknown task '{name}': use one of {', '.join(names('task'))}")
    return TaskSpec.from_config(_load(file))


def task_default_setting(name: str) -> str | None:
    """The setting conf/task/<name>.yaml chooses for itself (`override /setting@_global_.setting: ...`), if any."""
    file = find("task", name)
    if file is None:
        return None
    for entry in OmegaConf.load(file).get("defaults", []) or []:
        if isinstance(entry, str) or not hasattr(entry, "items"):
            continue
        for key, value in entry.items():
            if str(key).startswith("override /setting"):
                return str(value)
    return None
