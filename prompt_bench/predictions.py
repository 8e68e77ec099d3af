"""A run's per-example predictions and gold labels, kept in its folder as `predictions.safetensors`, so later
analysis (confidence intervals, paired tests, baselines: see stats.py and report.py) needs no re-run.

One entry per scored split and task: `test/<task>` and `dev/<task>` (a multitask run has one `test/<task>` per
task of the mixture and one `dev/<union task>`). Each entry holds `<entry>/preds` and `<entry>/labels` (int16
class indices in the task's own label order) and, where the task groups its examples (MultiRC's questions),
`<entry>/groups` (int32 ids); the header's metadata names each entry's metric and number of classes. Nothing is pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from prompt_bench.batching import EncodedSplit
from prompt_bench.evaluation import ScoreFn, predict
from prompt_bench.tasks import metrics

FILE = "predictions.safetensors"


@dataclass
class Predictions:
    """One task's predictions on one split."""

    metric: str  # the task's metric, as metrics.compute takes it (e.g. "macro_f1", "multirc")
    preds: np.ndarray  # [N] predicted class indices
    labels: np.ndarray  # [N] gold class indices
    n_classes: int  # the classes that competed (the width of the logits)
    groups: np.ndarray | None = None  # [N] question ids (MultiRC), None where examples stand alone

    def scores(self) -> dict[str, float]:
        return metrics.compute(self.metric, self.preds, self.labels, None if self.groups is None else list(self.groups))


def _group_ids(groups: Sequence[str | None]) -> np.ndarray | None:
    if not groups or all(g is None for g in groups):
        return None
    ids: dict[str | None, int] = {}
    return np.asarray([ids.setdefault(g, len(ids)) for g in groups], dtype=np.int32)


def of_split(score: ScoreFn, split: EncodedSplit, metric: str, batch_size: int,
             classes: Sequence[int] | None = None, desc: str = "evaluate") -> Predictions:
    """Predict every example of `split`; with `classes`, only those logit columns compete (a multitask row
    takes only its own task's label words) and predictions are indices into `classes`."""
    logits, labels = predict(score, split, batch_size, desc)
    if classes is not None:
        logits = logits[:, list(classes)]
    return Predictions(metric, logits.argmax(-1).numpy(), labels.numpy(), logits.shape[1], _group_ids(split.groups))


def scores(tasks: dict[str, Predictions]) -> dict[str, float]:
    """One task: its metrics. Several (multitask): `<task>/<key>` for each, and `average`, the mean of the
    tasks' headline metrics."""
    if len(tasks) == 1:
        return next(iter(tasks.values())).scores()
    out: dict[str, float] = {}
    headline = []
    for name, p in tasks.items():
        result = p.scores()
        out.update({f"{name}/{k}": v for k, v in result.items()})
        headline.append(result[metrics.primary(p.metric)])
    out["average"] = float(sum(headline) / len(headline))
    return out


def save(run_dir: Path, splits: dict[str, dict[str, Predictions]]) -> Path:
    """Write {split: {task: Predictions}} to `<run_dir>/predictions.safetensors` (via a temp name)."""
    tensors: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, str]] = {}
    for split, tasks in splits.items():
        for task, p in tasks.items():
            entry = f"{split}/{task}"
            tensors[f"{entry}/preds"] = np.ascontiguousarray(p.preds, dtype=np.int16)
            tensors[f"{entry}/labels"] = np.ascontiguousarray(p.labels, dtype=np.int16)
            if p.groups is not None:
                tensors[f"{entry}/groups"] = np.ascontiguousarray(p.groups, dtype=np.int32)
            meta[entry] = {"metric": p.metric, "n_classes": int(p.n_classes)}
    path = Path(run_dir) / FILE
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"entries": json.dumps(meta, sort_keys=True)})
    tmp.replace(path)
    return path


def load(run_dir: Path) -> dict[str, dict[str, Predictions]] | None:
    """{split: {task: Predictions}} from a run folder; None for a folder written before predictions were kept."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        meta = json.loads((handle.metadata() or {}).get("entries", "{}"))
    tensors = load_file(str(path))
    out: dict[str, dict[str, Predictions]] = {}
    for entry, info in meta.items():
        split, task = entry.split("/", 1)
        groups = tensors.get(f"{entry}/groups")
        out.setdefault(split, {})[task] = Predictions(
            info["metric"], tensors[f"{entry}/preds"].astype(np.int64), tensors[f"{entry}/labels"].astype(np.int64),
            int(info["n_classes"]), None if groups is None else groups.astype(np.int64))
    return out


def score_and_save(run_dir: Path, scorer: ScoreFn, tests: dict[str, tuple[EncodedSplit, str, Sequence[int] | None]],
                   dev: tuple[str, EncodedSplit, str], batch_size: int, model: torch.nn.Module,
                   phase: Callable[[str], ContextManager] = lambda name: nullcontext()) -> tuple[dict, dict]:
    """Score the final prompt on the test split(s) {task: (split, metric, classes)} and on the dev split
    (task, split, metric) with the model in eval mode, keep every prediction in the run folder, and return
    the (test, dev) scores. `phase(name)` wraps the test and the dev scoring (the run's phase timings)."""
    was_training = model.training
    model.eval()
    try:
        with phase("test"):
            test = {task: of_split(scorer, split, metric, batch_size, classes,
                                   desc="test" if len(tests) == 1 else f"test {task}")
                    for task, (split, metric, classes) in tests.items()}
        dev_task, dev_split, dev_metric = dev
        with phase("dev"):
            dev_predictions = {dev_task: of_split(scorer, dev_split, dev_metric, batch_size, desc="dev")}
    finally:
        model.train(was_training)
    save(run_dir, {"test": test, "dev": dev_predictions})
    return scores(test), scores(dev_predictions)
