"""Run folders -> paper-style tables (method x task, mean ± std over seeds), with no W&B needed."""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def collect(root: Path) -> list[dict[str, Any]]:
    """Every finished run (a results.json) under `root`."""
    return [json.loads(p.read_text()) | {"run_dir": str(p.parent)} for p in sorted(Path(root).rglob("results.json"))]


def aggregate(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, task) -> mean and std of the task's headline test metric over seeds (std as LM-BFF: ddof=0)."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    seeds: dict[tuple[str, str], list[int]] = defaultdict(list)
    metric_of: dict[str, str] = {}
    for run in runs:
        key = (run["method"], run["task"])
        scores[key].append(float(run["test"][run["metric"]]))
        seeds[key].append(int(run["seed"]))
        metric_of[run["task"]] = run["metric"]
    return {
        key: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v), "seeds": sorted(seeds[key]),
              "metric": metric_of[key[1]]}
        for key, v in scores.items()
    }


def markdown(table: dict[tuple[str, str], dict[str, Any]]) -> str:
    methods = sorted({m for m, _ in table})
    tasks = sorted({t for _, t in table})
    metric_names = {t: next(v["metric"] for (m, tt), v in table.items() if tt == t) for t in tasks}
    head = "| method | " + " | ".join(f"{t} ({metric_names[t]})" for t in tasks) + " | average |"
    lines = [head, "|" + "---|" * (len(tasks) + 2)]
    for method in methods:
        cells, means = [], []
        for task in tasks:
            cell = table.get((method, task))
            if cell is None:
                cells.append("–")
                continue
            means.append(cell["mean"])
            cells.append(f"{100 * cell['mean']:.2f} ± {100 * cell['std']:.2f} (n={cell['n']})")
        average = f"{100 * np.mean(means):.2f}" if len(means) == len(tasks) else "–"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {average} |")
    return "\n".join(lines)


def write_csv(table: dict[tuple[str, str], dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["method", "task", "metric", "mean", "std", "n", "seeds"])
        for (method, task), cell in sorted(table.items()):
            writer.writerow([method, task, cell["metric"], cell["mean"], cell["std"], cell["n"],
                             " ".join(map(str, cell["seeds"]))])


def series_label(run: dict[str, Any]) -> str:
    """A curve's name: the method, or the optimizer when a black-box method runs a non-default one
    (bbt with optimizer=random_search is the random-search baseline)."""
    config_file = Path(run["run_dir"]) / "config.yaml"
    if config_file.is_file():
        from omegaconf import OmegaConf

        optimizer = OmegaConf.load(config_file).get("optimizer", {}).get("name")
        if optimizer == "random_search":
            return "random_search"
        if optimizer not in (None, "cma", "none", "adamw"):
            return f"{run['method']} ({optimizer})"
    return run["method"]


def curves(runs: list[dict[str, Any]], task: str, key: str) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """label -> one (steps, values) pair per seed, for metric `key` (e.g. dev/accuracy) in metrics.jsonl."""
    from prompt_bench.tracking import read_metrics

    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for run in runs:
        if run["task"] != task:
            continue
        points = [(r["step"], r[key]) for r in read_metrics(Path(run["run_dir"])) if key in r]
        if points:
            steps, values = zip(*points)
            out[series_label(run)].append((np.asarray(steps), np.asarray(values, dtype=float)))
    return out


def plot_curves(runs: list[dict[str, Any]], task: str, keys: list[str], path: Path, xlabel: str) -> Path | None:
    """One panel per metric key; one line per method (mean over seeds) with a min-max band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, curves(runs, task, key)) for key in keys]
    panels = [(key, c) for key, c in panels if c]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (key, by_label) in zip(axes[0], panels):
        for label, seeds in sorted(by_label.items()):
            grid = np.unique(np.concatenate([steps for steps, _ in seeds]))
            # Each seed's curve is a step function (last value so far), read on the common grid.
            values = np.stack([vals[np.clip(np.searchsorted(steps, grid, side="right") - 1, 0, None)]
                               for steps, vals in seeds])
            ax.plot(grid, values.mean(0), marker="o", markersize=3, label=f"{label} (n={len(seeds)})")
            ax.fill_between(grid, values.min(0), values.max(0), alpha=0.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(key)
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prompt-bench-report", description=__doc__)
    parser.add_argument("root", type=Path, help="a sweep or outputs folder holding run folders")
    args = parser.parse_args(argv)
    runs = collect(args.root)
    if not runs:
        raise SystemExit(f"prompt-bench-report: error: no finished runs (results.json) under {args.root}")
    table = aggregate(runs)
    text = markdown(table)
    (args.root / "report.md").write_text(text + "\n")
    write_csv(table, args.root / "report.csv")
    print(text)
    print(f"\n{len(runs)} runs; written to {args.root / 'report.md'} and {args.root / 'report.csv'}")
    for task in sorted({r["task"] for r in runs}):
        metric = next(r["metric"] for r in runs if r["task"] == task)
        for unit, label in (("api_calls", "API calls"), ("steps", "optimizer steps")):
            chosen = [r for r in runs if r["task"] == task and r.get("budget_unit") == unit]
            png = plot_curves(chosen, task, [f"dev/{metric}", f"test/{metric}"],
                              args.root / "plots" / f"{task}_{unit}.png", label)
            if png is not None:
                print(f"plot: {png}")


if __name__ == "__main__":
    main()
