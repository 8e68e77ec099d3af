"""Task metrics, as the GLUE / SuperGLUE leaderboards define them."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from prompt_bench.errors import ConfigError

_PRIMARY = {"accuracy": "accuracy", "f1": "f1", "macro_f1": "macro_f1", "matthews": "matthews", "multirc": "f1a"}
# the metrics scored on examples alone, whose headline key is their name (MultiRC's is scored by question)
PLAIN = tuple(name for name, key in _PRIMARY.items() if name == key)


def primary(metric: str) -> str:
    """The key of compute()'s result that a run reports as its headline number."""
    try:
        return _PRIMARY[metric]
    except KeyError:
        raise ConfigError(f"unknown metric '{metric}'; use one of {', '.join(_PRIMARY)}") from None


def score_range(metric: str) -> tuple[float, float]:
    """The values a task's headline score can take: Matthews correlation in [-1, 1], every other metric in [0, 1]."""
    return (-1.0, 1.0) if metric == "matthews" else (0.0, 1.0)


def compute(metric: str, preds: Sequence[int], labels: Sequence[int], groups: Sequence[str] | None = None) -> dict[str, float]:
    key = primary(metric)
    preds = [int(p) for p in preds]
    labels = [int(y) for y in labels]
    if len(preds) != len(labels) or not labels:
        raise ValueError(f"need equally many predictions and labels, at least one (got {len(preds)} and {len(labels)})")
    out = {"accuracy": float(accuracy_score(labels, preds))}
    if metric == "f1":
        # MRPC: F1 of the "equivalent" class (index 1), as GLUE scores it.
        out[key] = float(f1_score(labels, preds, average="binary", pos_label=1, zero_division=0))
    elif metric == "macro_f1":
        out[key] = float(f1_score(labels, preds, average="macro", zero_division=0))
    elif metric == "matthews":
        out[key] = float(matthews_corrcoef(labels, preds))
    elif metric == "multirc":
        if groups is None or len(groups) != len(labels):
            raise ValueError("the multirc metric needs one question group per answer")
        out[key] = float(f1_score(labels, preds, average="binary", pos_label=1, zero_division=0))
        all_right: dict[str, bool] = defaultdict(lambda: True)
        for p, y, g in zip(preds, labels, groups):
            all_right[g] = all_right[g] and p == y
        out["em"] = sum(all_right.values()) / len(all_right)
    return out


def from_confusion(metric: str, counts: np.ndarray) -> np.ndarray:
    """The headline metric from confusion counts [..., C, C] (rows gold, columns predicted), for many
    confusion matrices at once: what compute() gives for the predictions the counts tally (tested equal to
    it). The bootstrap in stats.py recomputes the metric on thousands of resamples; going through sklearn for
    each would take minutes per table, while every headline metric here is a function of the confusion matrix."""
    counts = np.asarray(counts, dtype=float)
    key = primary(metric)
    total = counts.sum((-2, -1))
    true_pos = np.diagonal(counts, axis1=-2, axis2=-1)
    gold = counts.sum(-1)  # per class: examples whose label it is
    predicted = counts.sum(-2)  # per class: examples predicted as it
    with np.errstate(divide="ignore", invalid="ignore"):
        if key == "accuracy":
            return np.where(total > 0, true_pos.sum(-1) / total, 0.0)
        # F1 = 2 tp / (2 tp + fp + fn) = 2 tp / (gold + predicted); 0 where a class is neither (zero_division=0)
        denominator = gold + predicted
        f1 = np.where(denominator > 0, 2 * true_pos / denominator, 0.0)
        if key in ("f1", "f1a"):  # the positive class, index 1 (MRPC's "equivalent", a MultiRC answer's "true")
            return f1[..., 1]
        if key == "macro_f1":  # sklearn averages over the classes present in the labels or the predictions
            present = denominator > 0
            return np.where(present.any(-1), (f1 * present).sum(-1) / np.maximum(present.sum(-1), 1), 0.0)
        if key == "matthews":  # sklearn's multiclass form; 0 when either side has a single class
            covariance = true_pos.sum(-1) * total - (gold * predicted).sum(-1)
            spread = (total**2 - (predicted**2).sum(-1)) * (total**2 - (gold**2).sum(-1))
            return np.where(spread > 0, covariance / np.sqrt(np.where(spread > 0, spread, 1.0)), 0.0)
    raise ConfigError(f"no confusion-matrix form for metric '{metric}'")
