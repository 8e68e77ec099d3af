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

from prompt_bench import cli_errors, conf_files, gpu_pool  # registers ${pb_gpu_count:} / ${pb_gpu_list:} for conf/hydra/launcher/*
from prompt_bench.errors import PromptBenchError

# A console script has no useful working directory to resolve a relative config_path against.
CONF_DIR = str(conf_files.CONF_DIR)

#: config keys that do not change what a run computes, so they stay out of its folder's hash
UNHASHED = ("hydra", "run", "logger", "optimized_metric")


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


#: set when the user asked for tracebacks (HYDRA_FULL_ERROR=1): errors are then raised, not summarised
TRACEBACK_ENV = "PROMPT_BENCH_TRACEBACK"
#: config groups a sweep may range over (`method=bbt,clip_tuning`)
GROUPS = ("method", "model", "task", "optimizer", "setting", "logger")
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


def check_added_keys(cfg: DictConfig) -> None:
    """A key added with `+key=value` (or `++`, as the sweep fix above does) must be one the chosen options
    declare: Hydra's own hint for a misspelt key is to append it, and an appended key no code reads would be
    accepted silently. The job's options are composed again without those keys, and each must be found there."""
    from hydra import compose

    from prompt_bench.errors import ConfigError

    task_overrides = list(HydraConfig.get().overrides.task)
    groups = set(cli_errors.groups())
    added = [o for o in task_overrides
             if o.startswith("+") and o.lstrip("+").partition("=")[0].split("@")[0] not in groups]
    if not added:
        return
    plain = compose(config_name="config", overrides=[o for o in task_overrides if o not in added])
    missing = object()
    for override in added:
        key = override.lstrip("+").partition("=")[0]
        if OmegaConf.select(plain, key, default=missing) is missing:
            raise ConfigError(cli_errors.unknown_key(key, task_overrides))


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
    flags = [a for a in sys.argv[1:] if a in ("-m", "--multirun")]
    # argparse takes `-m` only before the overrides; a user who typed it after one meant the same sweep
    sys.argv[1:] = flags[:1] + [a for a in sys.argv[1:] if a not in ("-m", "--multirun")]
    sys.argv[1:], _ = force_keys_of_swept_groups(sys.argv[1:])
    # Hydra prints its own multi-line report unless asked to raise; we raise, then print one line. A user who
    # set HYDRA_FULL_ERROR asked for tracebacks, and gets them.
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    if wants_traceback:
        os.environ[TRACEBACK_ENV] = "1"
    try:
        _hydra_main()
    except BrokenPipeError:  # `prompt-bench --help | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        if wants_traceback:
            raise
        print(f"\nprompt-bench: error: {cli_errors.INTERRUPTED_LINE}", file=sys.stderr)
        sys.exit(cli_errors.INTERRUPTED)
    except Exception as err:  # noqa: BLE001 - whatever escapes Hydra becomes one line
        if wants_traceback:
            raise
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(err, HydraException | OmegaConfBaseException):
            print(f"prompt-bench: error: {cli_errors.hydra_line(err, sys.argv[1:])}", file=sys.stderr)
            sys.exit(cli_errors.BAD_INPUT)
        explained = cli_errors.job_line(err)
        print(f"prompt-bench: error: {explained or cli_errors.bug_line(err, None)}", file=sys.stderr)
        sys.exit(cli_errors.BAD_INPUT if explained else 1)
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
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        from prompt_bench import config_schema

        check_added_keys(cfg)
        config_schema.check(cfg)  # before torch is even imported: a typo costs a fraction of a second
        group_sweep_in_wandb(cfg)
        from prompt_bench import experiment

        results = experiment.run(cfg, run_dir)
        return JobValue(objective(results, cfg.get("optimized_metric")), results=results)
    except Exception as err:  # noqa: BLE001 - every failure of a job is one line; a bug also leaves its traceback
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        expected = isinstance(err, PromptBenchError) or cli_errors.job_line(err) is not None
        if isinstance(err, PromptBenchError):
            message = str(err).splitlines()[0]
        elif expected:
            message = cli_errors.job_line(err)
        else:
            message = cli_errors.bug_line(err, _keep_traceback(err, run_dir))
        print(f"prompt-bench: error: {message}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return JobValue(float("nan"), error=message)  # one bad job must not end the whole sweep (Optuna: a failed trial)
        sys.exit(cli_errors.BAD_INPUT if expected else 1)


class JobValue(float):
    """What a job returns: one number, the objective Hydra's sweepers (Optuna, ...) optimise, carrying the run's
    results (or its error) for our own sweep summary. NaN for a failed job, which Optuna records as a failed trial."""

    def __new__(cls, value: float, results: dict | None = None, error: str | None = None):
        number = super().__new__(cls, value)
        number.results, number.error = results, error
        return number

    def __float__(self) -> float:
        # A sweeper that asks a failed job for its number gets the job's error (Optuna then records a failed trial
        # and goes on), never a NaN it would try to rank.
        if self.error:
            raise ValueError(f"the job failed: {self.error}")
        return super().__float__()

    def __reduce__(self):  # launchers that run jobs in other processes pickle the return value
        return (JobValue, (super().__float__(), self.results, self.error))


def objective(results: dict, optimized_metric: str | None) -> float:
    """The selected prompt's dev score: on the task's own metric, or on `optimized_metric` (a dev metric, e.g.
    `dev/f1`; never a test metric: hyperparameters are chosen on dev)."""
    from prompt_bench.errors import ConfigError

    name = str(optimized_metric or f"dev/{results['metric']}")
    split, _, metric = name.rpartition("/")
    if split not in ("", "dev"):
        raise ConfigError(f"optimized_metric={name}: hyperparameters are searched on dev, never {split}: "
                          f"use optimized_metric=dev/{metric}")
    if metric not in results["dev"]:
        raise ConfigError(f"optimized_metric={name} is not a dev metric of this run: use one of "
                          f"{', '.join('dev/' + k for k in results['dev'])}")
    return float(results["dev"][metric])


def _keep_traceback(err: BaseException, run_dir: Path) -> Path | None:
    """Append a bug's traceback to the run's run.log (only where the run got far enough to have one)."""
    import traceback

    log_file = run_dir / "run.log"
    if not log_file.is_file():
        return None
    with log_file.open("a", encoding="utf-8") as out:
        out.write("".join(traceback.format_exception(err)))
    return log_file


if __name__ == "__main__":
    main()
