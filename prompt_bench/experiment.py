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

from prompt_bench import __version__, conf_files, config_schema, predictions, progress, settings
from prompt_bench.artifacts import save_tensors
from prompt_bench.checkpoint import Checkpoint
from prompt_bench.config_values import flag
from prompt_bench.errors import ConfigError, DataError, RunBusy
from prompt_bench.evaluation import score_split
from prompt_bench.methods.base import (
    BlackBoxContext, Evaluation, FitContext, Method, RunFiles, Solution, WhiteBoxContext,
)
from prompt_bench.methods.blackbox import BlackBoxAPI
from prompt_bench.models import build_backbone
from prompt_bench.models.loading import ModelSpec
from prompt_bench.optim import torch_optim
from prompt_bench.summary import print_summary
from prompt_bench.tasks import loading
from prompt_bench.tasks.spec import TaskSpec
from prompt_bench.tracking import Tracker

log = logging.getLogger(__name__)

#: which optimizer kinds each access level accepts, and what to suggest otherwise
_OPTIMIZER_FOR_ACCESS = {
    "gradient": ("gradient", "optimizer=adamw (or adafactor)"),
    "black_box": ("dfo", "optimizer=cma (or another derivative-free optimizer)"),
}

@dataclass
class Plan:
    """Everything decided before anything heavy is loaded."""

    task: TaskSpec
    model: ModelSpec
    method_cls: type[Method]
    setting: settings.Setting
    encoding: settings.Encoding  # how the method wants its inputs encoded


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
    method_cfg = config_schema.section(OmegaConf.to_container(cfg.method, resolve=True), "method")
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
    setting = settings.build(cfg)
    setting.check(task, model, method_cfg, method_cls)
    method_cls.check(method_cfg)
    plain_input = method_cls.reads_plain_input(method_cfg)
    if plain_input:
        setting.check_plain_input(task)
    encoding = settings.Encoding(prompt_len=method_cls.prompt_length(method_cfg),
                                 placeholders=method_cls.placeholders(method_cfg), plain_input=plain_input,
                                 black_box=method_cls.access == "black_box")
    return Plan(task=task, model=model, method_cls=method_cls, setting=setting, encoding=encoding)


def load_data(cfg: DictConfig, task: TaskSpec) -> settings.Data:
    """One task's examples as the config's setting splits them (no model needed)."""
    return settings.build(cfg).load(task)


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
    data = the_plan.setting.load(the_plan.task)
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


def _run_locked(cfg: DictConfig, the_plan: Plan, folder: RunFolder, data: Any) -> dict[str, Any]:
    if folder.finished:  # another process may have finished it between our first look and the lock
        results = _read_results(folder)
        print_summary(results, folder.path, skipped=True)
        return results
    aside = folder.set_aside() if folder.started and cfg.run.restart else None
    shown = flag("run.progress", cfg.run.progress)
    progress.configure(shown, float(cfg.run.progress_every_s))
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


def _execute(cfg: DictConfig, the_plan: Plan, folder: RunFolder, data: Any) -> dict[str, Any]:
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
    log.info("config hash %s; %s=%s task=%s model=%s seed=%s setting=%s scale=%s", config_hash(_root_=cfg), "method",
             cfg.method.name, the_plan.task.name, the_plan.model.name, cfg.seed, cfg.setting.name, cfg.scale)
    config = OmegaConf.to_container(cfg, resolve=True)
    (folder.path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    with phases.phase("load model", f"{the_plan.model.name} from {the_plan.model.location}"):
        backbone = build_backbone(
            the_plan.model, device=str(cfg.compute.device), bf16=cfg.compute.bf16,
            max_tokens_per_forward=cfg.compute.max_tokens_per_forward,
        )
    with phases.phase("data"):
        prepared = the_plan.setting.prepare(the_plan.task, data, backbone, the_plan.encoding)
        task, train, dev = prepared.task, prepared.train, prepared.dev
        log.info("%d train / %d dev / %d test examples", len(train), len(dev), prepared.n_test)
        for note in prepared.notes:
            log.warning("data: %s", note)
    eval_batch = int(cfg.compute.eval_batch_size)

    def in_eval_mode(score):
        def scored(scorer) -> dict[str, float]:
            was_training = backbone.model.training
            backbone.model.eval()
            try:
                return score(scorer)
            finally:
                backbone.model.train(was_training)

        return scored

    dev_score = in_eval_mode(lambda scorer: score_split(scorer, dev, task.metric, eval_batch, desc="dev"))
    test_score = in_eval_mode(lambda scorer: predictions.scores(
        {name: predictions.of_split(scorer, split, metric, eval_batch, classes,
                                    desc="test" if len(prepared.tests) == 1 else f"test {name}")
         for name, (split, metric, classes) in prepared.tests.items()}))

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
    method_cfg = the_plan.setting.method_config(method_cfg, the_plan.method_cls.access == "gradient", len(train))
    common = dict(
        task=task, train=train, dev=dev, method=method_cfg,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True), seed=int(cfg.seed), tracker=tracker,
        checkpoint=checkpoint,
        evaluation=Evaluation(dev=dev_score, metric=task.selection_metric, batch_size=eval_batch,
                              test=test_score if cfg.run.track_test else None),
        files=RunFiles(run_dir=folder.path, cache_dir=Path(str(cfg.run.root)) / "cache",
                       mirror_root=loading.mirror_root(cfg.data.mirror)),
    )
    if the_plan.method_cls.access == "black_box":
        # a black-box method never holds the model: only the billed API
        ctx: FitContext = BlackBoxContext(**common, blackbox=BlackBoxAPI(backbone, train, budget=int(method_cfg["budget"])),
                                          train_examples=prepared.train_examples)
    else:
        ctx = WhiteBoxContext(**common, backbone=backbone, patience=the_plan.setting.patience,
                              n_tasks=prepared.n_tasks, task_tokens=prepared.task_tokens)
    with phases.phase("train", f"method={cfg.method.name}, {the_plan.method_cls.access.replace('_', '-')} access"):
        solution: Solution = the_plan.method_cls().fit(ctx)
    _log_selection(solution)

    scorer = solution.scorer(backbone)
    test_scores, dev_scores = predictions.score_and_save(
        folder.path, scorer, prepared.tests,
        (task.name, dev, task.metric), eval_batch, backbone.model, phase=phases.phase)
    dev_scores.update({alias: dev_scores[key] for alias, key in prepared.dev_aliases.items()})
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
             "prompt_mode": "insert" if the_plan.encoding.placeholders is None else "add",
             **({} if the_plan.encoding.placeholders is None else {"placeholder_ids": the_plan.encoding.placeholders.ids(
                 backbone.tokenizer, the_plan.model.name), "placeholder_separator": the_plan.encoding.placeholders.separator}),
             **solution.meta},
        )
    results = {
        "task": task.name, "method": str(cfg.method.name), "model": the_plan.model.name,
        "setting": str(cfg.setting.name), "seed": int(cfg.seed),
        "metric": prepared.metric,
        "test": test_scores, "dev": dev_scores,
        "budget_used": solution.budget_used,
        "budget_unit": "api_calls" if the_plan.method_cls.access == "black_box" else "steps",
        "budget": method_cfg.get("budget"), "scale": str(cfg.scale),
        "n_train": len(train), "n_dev": len(dev),
        "n_test": prepared.n_test, **prepared.facts,
        "data_notes": prepared.notes, "data_sources": prepared.sources,
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

