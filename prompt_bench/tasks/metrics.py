"""Task metrics, as the GLUE / SuperGLUE leaderboards define them."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from prompt_bench.errors import ConfigError

_PRIMARY = {"accuracy": "accuracy", "f1": "f1", "macro_f1": "macro_f1", "matthews": "matthews", "multirc": "f1a"}


def primary(metric: str) -> str:
    """The key of compute()'s result that a run reports as its headline number."""
    try:
        return _PRIMARY[metric]
    except KeyError:
        raise ConfigError(f"unknown metric '{metric}'; use one of {', '.join(_PRIMARY)}") from None


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
