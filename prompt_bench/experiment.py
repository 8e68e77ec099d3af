"""One run, start to finish: config -> task -> batches -> backbone -> method -> artifact -> evaluation -> tracking.

This is the only module that knows every other one. Everything that can be checked without loading
a model or data is checked first (`plan`), so a bad combination fails in well under a second.
"""

from __future__ import annotations

import importlib
import json
import logging
import platform
import resource
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from prompt_bench import __version__, conf_files, config_schema, full_data, multitask, predictions, progress
from prompt_bench.artifacts import save_tensors
from prompt_bench.batching import encode_split
from prompt_bench.checkpoint import Checkpoint
from prompt_bench.config_values import flag
from prompt_bench.errors import ConfigError, DataError, RunBusy
from prompt_bench.evaluation import score_split
from prompt_bench.methods.base import FitContext, Method, Solution
from prompt_bench.methods.blackbox import BlackBoxAPI
from prompt_bench.models import build_backbone
from prompt_bench.models.loading import ModelSpec
from prompt_bench.optim import torch_optim
from prompt_bench.plain_input import check_plain_input, encode_plain
from prompt_bench.prompts.placeholders import Placeholders
from prompt_bench.summary import print_summary
from prompt_bench.tasks import loading, metrics, sampling
from prompt_bench.tasks.spec import TaskSpec
from prompt_bench.tracking import Tracker

log = logging.getLogger(__name__)

#: which optimizer kinds each access level accepts, and what to suggest otherwise
_OPTIMIZER_FOR_ACCESS = {
    "gradient": ("gradient", "optimizer=adamw (or adafactor)"),
    "black_box": ("dfo", "optimizer=cma (or another derivative-free optimizer)"),
}

#: the settings `load_data` knows how to split (one conf/setting/<name>.yaml each); the first two are few-shot
SETTINGS = ("few_shot", "fewglue", "full_data", "multitask")


def _unknown_setting(name: str) -> ConfigError:
    return ConfigError(f"unknown setting '{name}': use setting={', setting='.join(SETTINGS)}")


@dataclass
class Plan:
    """Everything decided before anything heavy is loaded."""

    task: TaskSpec
    model: ModelSpec
    method_cls: type[Method]
    prompt_len: int
    placeholders: Placeholders | None = None
    plain_input: bool = False  # the method reads the task's plain_input (no template), e.g. P-tuning v2's reference head


def method_class(name: str) -> type[Method]:
    module_name = f"prompt_bench.methods.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:  # the method exists but something it imports is not installed
            raise ConfigError(f"method={name} needs the package '{(err.name or '?').split('.')[0]}', which is not "
                              f"installed: pip install it (README's install command brings in every default)") from None
        known = conf_files.names("method")
        raise ConfigError(f"unknown method '{name}': use one of {', '.join(known)}") from None
    return module.METHOD


def plan(cfg: DictConfig) -> Plan:
    config_schema.check(cfg)
    task = TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True))
    model = ModelSpec.from_config(OmegaConf.to_container(cfg.model, resolve=True))
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    method_cls = method_class(str(cfg.method.name))
    if method_cls.access in _OPTIMIZER_FOR_ACCESS:
        kind, fix = _OPTIMIZER_FOR_ACCESS[method_cls.access]
        if cfg.optimizer.kind != kind:
            raise ConfigError(
                f"method={cfg.method.name} is {method_cls.access.replace('_', '-')} but optimizer={cfg.optimizer.name} "
                f"is a {cfg.optimizer.kind} optimizer: use {fix}"
            )
    if method_cls.access == "gradient":
        torch_optim.check(cfg.optimizer)
    setting = str(cfg.setting.name)
    if setting == "multitask":
        for spec in multitask.task_specs(cfg):
            spec.template_for(model.family)
        if multitask.task_tokens(cfg) and not method_cls.task_specific_prompts:
            raise ConfigError(
                f"setting.prompt=shared+task needs a method that trains task-specific prompts (prompt_tuning); "
                f"method={cfg.method.name} trains one shared prompt: use setting.prompt=shared"
            )
    else:
        task.template_for(model.family)
    method_cls.check(method_cfg)
    plain_input = method_cls.reads_plain_input(method_cfg)
    if plain_input:
        check_plain_input(task, setting)
    if setting not in SETTINGS:
        raise _unknown_setting(setting)
    if setting == "full_data":
        full_data.check(cfg.setting)
    if setting == "few_shot" and int(cfg.setting.k) <= 0:
        raise ConfigError(f"setting.k must be a positive number of examples per class, got {cfg.setting.k}")
    if setting == "fewglue":
        for key in ("n_train", "n_dev"):
            if int(cfg.setting[key]) <= 0:
                raise ConfigError(f"setting.{key} must be a positive number of examples in total, got {cfg.setting[key]}")
    return Plan(task=task, model=model, method_cls=method_cls, prompt_len=method_cls.prompt_length(method_cfg),
                placeholders=method_cls.placeholders(method_cfg), plain_input=plain_input)


@dataclass
class Data:
    train: list
    dev: list
    test: list
    notes: list[str]
    sources: dict[str, str]


def load_data(cfg: DictConfig, task: TaskSpec) -> Data:
    root = loading.mirror_root(cfg.data.mirror)
    pool = loading.load_split(task, "train", root)
    test = loading.load_split(task, "test", root)
    dev_pool = None
    setting, seed = str(cfg.setting.name), int(cfg.seed)
    try:
        if setting == "few_shot":
            train, dev = sampling.few_shot(pool.examples, int(cfg.setting.k), seed, task.num_classes)
        elif setting == "fewglue":
            n_train, n_dev = int(cfg.setting.n_train), int(cfg.setting.n_dev)
            dev_pool = loading.load_dev_pool(task, root)
            if dev_pool is None:
                train, dev = sampling.fixed_total(pool.examples, n_train, n_dev, seed, task.num_classes)
            else:
                # A fixed train set (boolq: the FewGLUE 32) is all train; dev comes from the pool held out of test.
                train, _ = sampling.fixed_total(pool.examples, n_train, 0, seed, task.num_classes)
                _, dev = sampling.fixed_total(dev_pool.examples, 0, n_dev, seed, task.num_classes)
        elif setting == "full_data":
            train, dev = sampling.full_data(
                pool.examples, seed, float(cfg.setting.dev_fraction), int(cfg.setting.max_dev)
            )
        else:
            raise _unknown_setting(setting)
    except DataError as err:
        raise DataError(f"task {task.name}: {err}") from None
    notes = [n for n in (pool.note, test.note, dev_pool and dev_pool.note) if n]
    sources = {"train": pool.source, "test": test.source}
    if dev_pool is not None:
        sources["dev"] = dev_pool.source
    return Data(train, dev, test.examples, list(dict.fromkeys(notes)), sources)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _versions() -> dict[str, str]:
    import nevergrad
    import transformers

    return {
        "prompt_bench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "nevergrad": nevergrad.__version__,
    }


class RunFolder:
    """A run folder is finished (results.json), interrupted (anything else in it), or new."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.results = self.path / "results.json"

    @property
    def finished(self) -> bool:
        return self.results.is_file()

    @property
    def started(self) -> bool:
        return (self.path / "config.yaml").is_file()

    def set_aside(self) -> Path:
        aside = self.path.with_name(f"{self.path.name}.interrupted-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(self.path), aside)
        self.path.mkdir(parents=True)
        return aside

    def trim_metrics(self, upto_step: int) -> None:
        """Drop metric lines written after the checkpoint we resume from (they will be written again)."""
        path = self.path / "metrics.jsonl"
        if path.is_file():
            kept = []
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    if json.loads(line)["step"] <= upto_step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass  # a line torn by the kill; the steps after the checkpoint are logged again anyway
            path.write_text("".join(line + "\n" for line in kept))


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    the_plan = plan(cfg)
    folder = RunFolder(run_dir)
    if folder.finished:
        results = _read_results(folder)
        print_summary(results, folder.path, skipped=True)
        return results
    # The data needs no model: a missing file, a bad line or a k the classes cannot supply fails here, in
    # seconds, before the run folder exists and before any weights load.
    if str(cfg.setting.name) == "multitask":
        for spec in multitask.task_specs(cfg):
            load_data(multitask.single_task_config(cfg), spec)
        data = None
    else:
        data = load_data(cfg, the_plan.task)
        if conf_files.task_default_setting(the_plan.task.name) == str(cfg.setting.name):
            data.notes.append(f"setting={cfg.setting.name} is task {the_plan.task.name}'s own default "
                              f"(conf/task/{the_plan.task.name}.yaml); choose another with setting=...")
    try:
        folder.path.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise ConfigError(f"cannot create the run folder {folder.path} (permission denied): "
                          "choose a folder you can write with run.root=<folder>") from None
    lock = FileLock(str(folder.path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunBusy(f"run folder {folder.path} is being run by another process right now: let it finish") from None
    try:
        return _run_locked(cfg, the_plan, folder, data)
    finally:
        lock.release()


def _read_results(folder: RunFolder) -> dict[str, Any]:
    try:
        return json.loads(folder.results.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{folder.results} is damaged (not JSON): the run finished but its results file is not "
                        f"readable; move it away (not deleted: it is the only copy) to run again") from None


def _run_locked(cfg: DictConfig, the_plan: Plan, folder: RunFolder, data: Data | None) -> dict[str, Any]:
    if folder.finished:  # another process may have finished it between our first look and the lock
        results = _read_results(folder)
        print_summary(results, folder.path, skipped=True)
        return results
    aside = folder.set_aside() if folder.started and cfg.run.restart else None
    shown = flag("run.progress", cfg.run.progress)
    progress.configure(shown, float(cfg.run.get("progress_every_s", 30)))
    _quiet_hub_bars(shown)
    with diary(folder.path / "run.log"):
        if aside is not None:
            log.info("restarting: the interrupted run was moved to %s", aside)
        return _execute(cfg, the_plan, folder, data)


@contextmanager
def diary(path: Path):
    """Within the block, everything our modules log at INFO and above is appended to `path` (the run's run.log:
    phases, dev evaluations, the selected prompt, warnings, the final metrics). A resumed run appends."""
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    ours = logging.getLogger("prompt_bench")
    before = ours.level
    ours.setLevel(logging.INFO)
    ours.addHandler(handler)
    try:
        yield
    except KeyboardInterrupt:
        log.warning("interrupted: run the same command again to resume")
        raise
    except Exception as err:
        log.error("failed: %s", str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise
    finally:
        ours.removeHandler(handler)
        ours.setLevel(before)
        handler.close()


def _quiet_hub_bars(enabled: bool) -> None:
    """Hugging Face's own bars (weight loading, downloads) only where ours would show bars: a terminal."""
    from transformers.utils import logging as hf_logging

    shown = enabled and progress.interactive()
    if shown:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
    try:  # the GGUF loader (SmolLM2) draws a plain tqdm bar that ignores the setting above
        import functools

        from tqdm.auto import tqdm
        from transformers import modeling_gguf_pytorch_utils as gguf_loading

        gguf_loading.tqdm = functools.partial(tqdm, disable=not shown)
    except ImportError:
        pass


def _execute(cfg: DictConfig, the_plan: Plan, folder: RunFolder, data: Data | None) -> dict[str, Any]:
    checkpoint = Checkpoint(folder.path)
    phases = progress.Phases()
    if checkpoint.exists():
        _, meta = checkpoint.load()
        folder.trim_metrics(int(meta.get("calls", meta.get("step", 0))))
        log.info("resuming the interrupted run in %s from its checkpoint (run.log continues below)", folder.path)
    else:
        (folder.path / "metrics.jsonl").unlink(missing_ok=True)
    from prompt_bench.cli import config_hash

    log.info("command: %s", " ".join(["prompt-bench", *sys.argv[1:]]) if sys.argv else "?")
    log.info("config hash %s; %s=%s task=%s model=%s seed=%s setting=%s", config_hash(_root_=cfg), "method",
             cfg.method.name, the_plan.task.name, the_plan.model.name, cfg.seed, cfg.setting.name)
    config = OmegaConf.to_container(cfg, resolve=True)
    (folder.path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    with phases.phase("load model", f"{the_plan.model.name} from {the_plan.model.location}"):
        backbone = build_backbone(
            the_plan.model, device=str(cfg.compute.device), bf16=cfg.compute.bf16,
            max_tokens_per_forward=cfg.compute.max_tokens_per_forward,
        )
    mixture = None
    with phases.phase("data"):
        if str(cfg.setting.name) == "multitask":
            mixture = multitask.prepare(cfg, backbone, the_plan.prompt_len, load_data, the_plan.placeholders)
            task, train, dev = mixture.task, mixture.train, mixture.dev
            data = Data(train=[], dev=[], test=[], notes=mixture.notes, sources=mixture.sources)
            test = None
        else:
            task = the_plan.task
            if str(cfg.setting.name) == "full_data" and the_plan.method_cls.access == "black_box":
                data.train = full_data.black_box_sample(cfg.setting, data.train, int(cfg.seed))
            backbone.set_verbalizer(task.verbalizer)
            if the_plan.plain_input:
                train, dev, test = (encode_plain(split, task, backbone, the_plan.prompt_len)
                                    for split in (data.train, data.dev, data.test))
            else:
                train, dev, test = (encode_split(split, task, backbone, the_plan.prompt_len, the_plan.placeholders)
                                    for split in (data.train, data.dev, data.test))
            truncated = {name: split.truncated for name, split in (("train", train), ("dev", dev), ("test", test))}
            if any(truncated.values()):
                data.notes.append("inputs cut to task.max_length (text only, never the prompt or template): "
                                  + ", ".join(f"{n} {name}" for name, n in truncated.items() if n))
        log.info("%d train / %d dev / %s test examples", len(train), len(dev), "-" if test is None else len(test))
        for note in data.notes:
            log.warning("data: %s", note)
    eval_batch = int(cfg.compute.eval_batch_size)

    def split_score(split, name: str):
        def score(scorer) -> dict[str, float]:
            was_training = backbone.model.training
            backbone.model.eval()
            try:
                return score_split(scorer, split, task.metric, eval_batch, desc=name)
            finally:
                backbone.model.train(was_training)

        return score

    dev_score = split_score(dev, "dev")

    tracker = Tracker(
        folder.path, OmegaConf.to_container(cfg.logger, resolve=True), config,
        name=f"{task.name}-{cfg.method.name}-{the_plan.model.name}-s{cfg.seed}",
        group=f"{task.name}-{cfg.setting.name}", job_type=str(cfg.method.name),
        tags=[task.name, str(cfg.setting.name), the_plan.model.name],
        step_unit="API calls" if the_plan.method_cls.access == "black_box" else "steps",
    )
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    tracker.use_inputs([Path(str(method_cfg[key])) for key in ("init", "source")
                        if method_cfg.get(key) and str(method_cfg[key]).endswith(".safetensors")
                        and Path(str(method_cfg[key])).is_file()])
    if str(cfg.setting.name) == "full_data" and the_plan.method_cls.access == "gradient":
        method_cfg = full_data.schedule(cfg.setting, method_cfg, len(train))
    ctx = FitContext(
        task=task, train=train, dev=dev, method=method_cfg,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True), seed=int(cfg.seed), tracker=tracker,
        checkpoint=checkpoint, dev_score=dev_score, primary_metric=task.selection_metric,
        run_dir=folder.path,
        test_score=(split_score(test, "test") if mixture is None else (lambda scorer: multitask.score_tests(scorer, mixture, eval_batch)))
        if cfg.run.get("track_test") else None,
        cache_dir=Path(str(cfg.run.root)) / "cache", mirror_root=loading.mirror_root(cfg.data.mirror),
        eval_batch_size=eval_batch, train_examples=list(data.train) if mixture is None else None,
        n_tasks=0 if mixture is None else len(mixture.tests), task_tokens=multitask.task_tokens(cfg),
        patience=cfg.setting.get("patience"),
    )
    if the_plan.method_cls.access == "black_box":
        ctx.blackbox = BlackBoxAPI(backbone, train, budget=int(method_cfg["budget"]))
    else:
        ctx.backbone = backbone
    with phases.phase("train", f"method={cfg.method.name}, {the_plan.method_cls.access.replace('_', '-')} access"):
        solution: Solution = the_plan.method_cls().fit(ctx)
    _log_selection(solution)

    scorer = solution.scorer(backbone)
    test_scores, dev_scores = predictions.score_and_save(
        folder.path, scorer, {task.name: (test, task.metric, None)} if mixture is None else multitask.test_splits(mixture),
        (task.name, dev, task.metric), eval_batch, backbone.model, phase=phases.phase)
    if mixture is not None:
        dev_scores["average"] = dev_scores["accuracy"]  # the combined dev set's accuracy, what selection used
    prompt_file = None
    if solution.prompt is not None or solution.tensors:
        tensors = dict(solution.tensors)
        if solution.prompt is not None:
            tensors["prompt"] = solution.prompt
        prompt_file = save_tensors(
            folder.path / "prompt", tensors,
            {"task": task.name, "method": str(cfg.method.name), "model": the_plan.model.name,
             "model_location": the_plan.model.location, "family": the_plan.model.family,
             "hidden_size": backbone.hidden_size, "seed": int(cfg.seed), "template": task.template_for(backbone.family),
             "verbalizer": list(task.verbalizer), "task_style": task.style,
             "prompt_mode": "insert" if the_plan.placeholders is None else "add",
             **({} if the_plan.placeholders is None else {"placeholder_ids": the_plan.placeholders.ids(
                 backbone.tokenizer, the_plan.model.name), "placeholder_separator": the_plan.placeholders.separator}),
             **solution.meta},
        )
    results = {
        "task": task.name, "method": str(cfg.method.name), "model": the_plan.model.name,
        "setting": str(cfg.setting.name), "seed": int(cfg.seed),
        "metric": metrics.primary(task.metric) if mixture is None else "average",
        "test": test_scores, "dev": dev_scores,
        "budget_used": solution.budget_used,
        "budget_unit": "api_calls" if the_plan.method_cls.access == "black_box" else "steps",
        "budget": method_cfg.get("budget"),
        "n_train": len(train), "n_dev": len(dev),
        "n_test": len(test) if mixture is None else sum(len(split) for _, split, _ in mixture.tests.values()),
        **({} if mixture is None else {"tasks": mixture.counts}),
        "data_notes": data.notes, "data_sources": data.sources,
        "wall_time_s": round(checkpoint.wall_time_s(), 2),
        "phase_seconds": phases.seconds,
        "peak_memory_mb": round(_peak_memory_mb(backbone.device), 1),
        "device": str(backbone.device), "precision": backbone.precision, "versions": _versions(), "method_info": solution.meta,
        # the hub commit the weights came from (None for a local folder): what to pin as model.revision to rerun
        "model_revision": getattr(backbone.model.config, "_commit_hash", None),
        **({"wandb_url": tracker.url} if tracker.url else {}),
    }
    tracker.log({f"test/{k}": v for k, v in test_scores.items()}, step=solution.budget_used or 0)
    tmp = folder.results.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(folder.results)
    # the W&B summary: what a dashboard compares across methods (the selected prompt's scores, not the last step's)
    tracker.finish({**{f"test/{k}": v for k, v in test_scores.items()}, **{f"dev/{k}": v for k, v in dev_scores.items()},
                    "budget_used": solution.budget_used, "budget_unit": results["budget_unit"],
                    "wall_time_s": results["wall_time_s"], "peak_memory_mb": results["peak_memory_mb"],
                    "n_train": results["n_train"], "run_folder": str(folder.path), "config_hash": config_hash(_root_=cfg)},
                   prompt_file)
    log.info("finished: test %s, dev %s; %s %s used; %.1f s in all (%s)",
             _scores(test_scores), _scores(dev_scores), solution.budget_used, results["budget_unit"],
             results["wall_time_s"], ", ".join(f"{k} {v:.1f} s" for k, v in phases.seconds.items()))
    print_summary(results, folder.path)
    return results


def _scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in scores.items())


def _log_selection(solution: Solution) -> None:
    """run.log: which prompt the method kept and why (its own words, from the solution's facts)."""
    meta = solution.meta
    facts = [f"{k}={meta[k]}" for k in ("selected", "best_dev", "best_calls", "best_step") if k in meta]
    if facts or "selection" in meta:
        log.info("selected prompt: %s%s", " ".join(facts), f" ({meta['selection']})" if "selection" in meta else "")

