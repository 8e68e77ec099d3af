"""The report's uncertainty: each table cell's confidence interval, each task's majority-class and random
baselines, which cells are distinguishable from the majority class and from their column's best, and paired
comparisons of two methods, all from the per-example predictions the run folders keep (predictions.py),
through stats.py. Cells whose runs predate stored predictions get none of these, and a note says so.

A table cell is a dict from report.aggregate: mean, std, n, seeds, metric, and `runs` (its run records).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prompt_bench import predictions, stats
from prompt_bench.tasks import metrics

ALPHA = 0.05

Cell = dict[str, Any]
Key = tuple[str, str]  # (label, task)


def seed_predictions(cell: Cell) -> dict[int, dict[str, predictions.Predictions]] | None:
    """{seed: {task: test predictions}} for a cell whose every run kept its predictions, else None."""
    if "_predictions" not in cell:
        out: dict[int, dict[str, predictions.Predictions]] | None = {}
        for run in cell.get("runs", []):
            kept = predictions.load(run["run_dir"])
            if kept is None or "test" not in kept:
                out = None
                break
            out[int(run["seed"])] = kept["test"]
        cell["_predictions"] = out or None
    return cell["_predictions"]


def parts(cell: Cell, seeds: list[int] | None = None) -> list[stats.Part] | None:
    """The cell's predictions as stats Parts (one per task; several for a multitask average), for `seeds`
    (default: all its seeds) in that order; None without predictions or when its seeds' test sets differ."""
    by_seed = seed_predictions(cell)
    if by_seed is None:
        return None
    seeds = sorted(by_seed) if seeds is None else seeds
    tasks = sorted(by_seed[seeds[0]])
    out = []
    for task in tasks:
        per_seed = [by_seed[s].get(task) for s in seeds]
        first = per_seed[0]
        if any(p is None or not np.array_equal(p.labels, first.labels) for p in per_seed):
            return None
        metric = _metric(cell, first.metric)
        if metric is None:
            return None
        out.append(stats.Part(metric, first.labels, np.stack([p.preds for p in per_seed]), first.n_classes,
                              first.groups))
    return out


def _metric(cell: Cell, kept: str) -> str | None:
    """The metric the predictions are scored in: the one they were kept with, or, where the cell is reported in
    another metric than its runs' own (prompt-bench-report --metric), that one if it is a plain metric and so are
    the predictions (MultiRC's are scored by question, which a plain metric would ignore); else None."""
    own = cell["runs"][0]["metric"] if cell.get("runs") else cell.get("metric")
    if cell.get("metric") == own:
        return kept
    return cell["metric"] if cell["metric"] in metrics.PLAIN and kept in metrics.PLAIN else None


def paired_parts(a: Cell, b: Cell) -> tuple[list[stats.Part], list[stats.Part], list[int]] | None:
    """Both cells' Parts on the seeds they share (paired seed by seed), or None when they cannot be paired."""
    by_a, by_b = seed_predictions(a), seed_predictions(b)
    if by_a is None or by_b is None:
        return None
    common = sorted(set(by_a) & set(by_b))
    if not common:
        return None
    parts_a, parts_b = parts(a, common), parts(b, common)
    if parts_a is None or parts_b is None or len(parts_a) != len(parts_b):
        return None
    for pa, pb in zip(parts_a, parts_b):
        if pa.metric != pb.metric or not np.array_equal(pa.labels, pb.labels):
            return None
    return parts_a, parts_b, common


@dataclass
class Analysis:
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> majority / random
    best_tests: int = 0  # comparisons with a column's best (one Holm family)
    majority_tests: int = 0  # comparisons with the majority class (another)
    notes: list[str] = field(default_factory=list)


def analyse(table: dict[Key, Cell], n_boot: int = stats.BOOTSTRAP, seed: int = stats.SEED) -> Analysis:
    """Add to every cell with predictions: `ci` (low, high), `vs_majority` (stats.Estimate of cell - majority,
    with `p_holm`), `like_majority` (not distinguishable from it) and `below_majority`; and in every column of
    several cells: `best` on the best mean, `vs_best` (cell - best) and `below_best` on the others. Returns the
    baselines and the size of each family of tests."""
    analysis = Analysis()
    tasks = sorted({task for _, task in table})
    majority_family: list[Key] = []
    best_family: list[Key] = []
    missing = []
    for task in tasks:
        column = {key: cell for key, cell in table.items() if key[1] == task}
        for key, cell in column.items():
            cell_parts = parts(cell)
            if cell_parts is None:
                missing.append(f"{key[0]} on {task}")
                continue
            estimate = stats.interval(cell_parts, n_boot, seed)
            cell["ci"] = (estimate.low, estimate.high)
            if task not in analysis.baselines:
                analysis.baselines[task] = stats.baselines(cell_parts, seed=seed)
            cell["vs_majority"] = stats.paired(cell_parts, stats.majority(cell_parts), n_boot, seed)
            majority_family.append(key)
        if len(column) < 2:
            continue
        best_key = max(column, key=lambda k: column[k]["mean"])
        column[best_key]["best"] = True
        for key, cell in column.items():
            if key == best_key:
                continue
            pair = paired_parts(cell, column[best_key])
            if pair is not None:
                cell["vs_best"] = stats.paired(pair[0], pair[1], n_boot, seed)
                best_family.append(key)
    for family, field_name in ((majority_family, "vs_majority"), (best_family, "vs_best")):
        adjusted = stats.holm([table[key][field_name].p for key in family])
        for key, p in zip(family, adjusted):
            table[key][field_name].p_holm = p
    for key in majority_family:
        versus = table[key]["vs_majority"]
        table[key]["like_majority"] = versus.p_holm >= ALPHA
        table[key]["below_majority"] = versus.p_holm < ALPHA and versus.mean < 0
    for key in best_family:
        table[key]["below_best"] = table[key]["vs_best"].p_holm < ALPHA and table[key]["vs_best"].mean < 0
    analysis.majority_tests, analysis.best_tests = len(majority_family), len(best_family)
    if missing:
        analysis.notes.append(
            f"No per-example predictions to score (run folders written before they were kept, or a MultiRC cell "
            f"reported in another metric than its own) for {len(missing)} cell(s): "
            f"{'; '.join(missing)}. They show mean ± std only, with no interval, baseline test or marker.")
    return analysis


def compare(table: dict[Key, Cell], pairs: list[tuple[str, str]], n_boot: int = stats.BOOTSTRAP,
            seed: int = stats.SEED) -> tuple[list[dict[str, Any]], list[str]]:
    """Paired comparisons A - B on every task both were run on; p-values Holm-adjusted over all rows."""
    labels = sorted({label for label, _ in table})
    rows, notes = [], []
    for a, b in pairs:
        for name in (a, b):
            if name not in labels:
                raise ValueError(f"no method '{name}' in this report: use one of {', '.join(labels)}")
        for task in sorted({t for label, t in table if label == a} & {t for label, t in table if label == b}):
            pair = paired_parts(table[(a, task)], table[(b, task)])
            if pair is None:
                notes.append(f"{a} vs {b} on {task}: no paired per-example predictions (older run folders, or no "
                             f"common seed), not compared")
                continue
            parts_a, parts_b, seeds = pair
            estimate = stats.paired(parts_a, parts_b, n_boot, seed)
            mcnemar = None
            if len(parts_a) == 1 and parts_a[0].metric == "accuracy":
                mcnemar = [stats.mcnemar(pa, pb, parts_a[0].labels) for pa, pb in zip(parts_a[0].preds, parts_b[0].preds)]
            rows.append({"a": a, "b": b, "task": task, "metric": table[(a, task)]["metric"], "mean_a": stats.point(parts_a),
                         "mean_b": stats.point(parts_b), "diff": estimate, "seeds": seeds, "mcnemar": mcnemar})
    for row, p in zip(rows, stats.holm([row["diff"].p for row in rows])):
        row["diff"].p_holm = p
    return rows, notes
