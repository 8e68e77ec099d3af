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


if __name__ == "__main__":
    main()
