"""`prompt-bench`: the Hydra entry point. It only turns a config into a run and errors into one line."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from prompt_bench import conf_files, gpu_pool  # registers ${pb_gpu_count:} / ${pb_gpu_list:} for conf/hydra/launcher/*
from prompt_bench.errors import PromptBenchError

# A console script has no useful working directory to resolve a relative config_path against.
CONF_DIR = str(conf_files.CONF_DIR)

#: config keys that do not change what a run computes, so they stay out of its folder's hash
UNHASHED = ("hydra", "run", "logger")


def config_hash(*, _root_: DictConfig) -> str:
    keep = [key for key in _root_ if key not in UNHASHED]
    content = OmegaConf.to_container(OmegaConf.masked_copy(_root_, keep), resolve=True)
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:8]


def task_label(*, _root_: DictConfig) -> str:
    """The task part of a run folder: the task, or the tasks joined by '+' for setting=multitask."""
    if str(_root_.setting.name) == "multitask":
        return "+".join(str(t) for t in _root_.setting.tasks)
    return str(_root_.task.name)


if not OmegaConf.has_resolver("pb_hash"):
    OmegaConf.register_new_resolver("pb_hash", config_hash)
if not OmegaConf.has_resolver("pb_task"):
    OmegaConf.register_new_resolver("pb_task", task_label)


#: config groups a sweep may range over (`method=bbt,clip_tuning`)
GROUPS = ("method", "model", "task", "optimizer", "setting", "logger")
#: where the CLI tells each job which overrides it forced into a swept group (checked per job)
FORCED_ENV = "PROMPT_BENCH_FORCED_KEYS"


def force_keys_of_swept_groups(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv, forced keys). In a multirun that sweeps a group (`method=bbt,clip_tuning method.budget=720`),
    Hydra checks the other overrides against the *default* composition before it expands the sweep
    (hydra#2888), so `method.budget` fails when the default method has no budget. Such overrides of keys
    inside a swept group become `++key=value`; each job then checks that its own group has the key, so a
    misspelt key is still refused rather than silently added."""
    if not any(arg in ("-m", "--multirun") for arg in argv):
        return argv, []
    swept = set()
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key in GROUPS and ("," in value or value.startswith(("range(", "choice(", "glob("))):
            swept.add(key)
    out, forced = [], []
    for arg in argv:
        key, eq, _ = arg.partition("=")
        if eq and key[:1].isalpha() and key.split(".")[0] in swept and "." in key:
            out.append("++" + arg)
            forced.append(key)
        else:
            out.append(arg)
    return out, forced


def check_forced_keys(cfg: DictConfig) -> None:
    """Refuse a job whose swept group lacks a key the command line forced into it (see above)."""
    from hydra import compose

    from prompt_bench.errors import ConfigError

    forced = [k for k in os.environ.get(FORCED_ENV, "").split(",") if k]
    if not forced:
        return
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("++")]
    plain = compose(config_name="config", overrides=overrides)
    missing = object()
    for key in forced:
        if OmegaConf.select(plain, key, default=missing) is missing:
            group = key.split(".")[0]
            raise ConfigError(f"{key} is not a setting of {group}={plain[group].get('name', '?')}: check its spelling "
                              f"(conf/{group}/*.yaml lists the keys)")


def group_sweep_in_wandb(cfg: DictConfig) -> None:
    """In a multirun, every job's W&B run joins one group named after the sweep folder (unless logger.group
    is set), so a dashboard groups a sweep's runs without configuration; single runs keep <task>-<setting>."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or cfg.logger.get("group") or "group" not in cfg.logger:
        return
    with open_dict(cfg):
        cfg.logger.group = Path(str(hydra_cfg.sweep.dir)).name


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):
        from prompt_bench import __version__

        print(f"prompt-bench {__version__}")
        return
    sys.argv[1:], forced = force_keys_of_swept_groups(sys.argv[1:])
    if forced:
        os.environ[FORCED_ENV] = ",".join(forced)
    _hydra_main()
    from prompt_bench import sweep_status

    if sweep_status.failed_jobs:
        sys.exit(1)  # a sweep with failed jobs is not a success (they are listed just above)


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # A GPU of the machine's pool when a launcher turns it on (conf/hydra/launcher/*_gpus.yaml): claimed before
    # anything in this process can start CUDA, held until the job ends.
    with gpu_pool.job_gpu(OmegaConf.select(cfg, "compute.device", default="auto",
                                           throw_on_resolution_failure=False)):
        return _job(cfg)


def _job(cfg: DictConfig):
    from prompt_bench import experiment

    try:
        check_forced_keys(cfg)
        group_sweep_in_wandb(cfg)
        return experiment.run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (PromptBenchError, MissingMandatoryValue) as err:
        message = str(err).splitlines()[0]
        if isinstance(err, MissingMandatoryValue):
            key = getattr(err, "full_key", "") or "a value"
            message = f"config value {key} is required: set it on the command line ({key}=...)"
        print(f"prompt-bench: error: {message}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return {"error": message}  # one bad job must not end the whole sweep
        sys.exit(2)


if __name__ == "__main__":
    main()
