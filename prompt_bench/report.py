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


def _flat(node: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(node, sort_keys=True)}


def _shown(value: str | None) -> str:
    decoded = None if value is None else json.loads(value)
    return decoded if isinstance(decoded, str) else str(value)


def _method_defaults(method: str, model: str) -> dict[str, str] | None:
    """The method's settings as `prompt-bench method=<method> model=<model>` would compose them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from prompt_bench.cli import CONF_DIR

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            cfg = compose(config_name="config", overrides=[f"method={method}", f"model={model}"])
        return _flat(OmegaConf.to_container(cfg.method, resolve=True))
    except Exception:  # a local or renamed model: fall back to comparing runs with each other
        return None


def label_runs(runs: list[dict[str, Any]]) -> None:
    """Give each run a `label` for tables and curves: its series (method, or the optimizer baseline) plus
    the method settings that vary between runs of that method here and differ from the method's defaults,
    e.g. `dynamic_prompting (dp.position="off")`, so an ablation is never averaged into the full method."""
    from omegaconf import OmegaConf

    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_method[run["method"]].append(run)
    for method, group in by_method.items():
        settings = []
        for run in group:
            config_file = Path(run["run_dir"]) / "config.yaml"
            cfg = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False) if config_file.is_file() else {}
            settings.append((_flat(cfg.get("method", {})), str(cfg.get("model", {}).get("name", ""))))
        keys = set().union(*(flat for flat, _ in settings)) - {"name"}
        varying = sorted(k for k in keys if len({flat.get(k) for flat, _ in settings}) > 1)
        defaults_for: dict[str, dict[str, str] | None] = {}
        for run, (flat, model) in zip(group, settings):
            if model not in defaults_for:
                defaults_for[model] = _method_defaults(method, model) if varying else None
            reference = defaults_for[model]
            if reference is None:  # the most common value among these runs stands in for the default
                reference = {k: max((f.get(k) for f, _ in settings), key=[f.get(k) for f, _ in settings].count)
                             for k in varying}
            diffs = [f"{k}={_shown(flat.get(k))}" for k in varying if flat.get(k) != reference.get(k)]
            run["label"] = series_label(run) + (f" ({', '.join(diffs)})" if diffs else "")


def aggregate(runs: list[dict[str, Any]], metric: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """(label, task) -> mean and std of the task's headline test metric over seeds (std as LM-BFF: ddof=0), or of
    `metric` (e.g. accuracy, which every task reports: DPT's metric on CB and MultiRC) where a run has it.
    The label is `run["label"]` (see label_runs), else the method."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    seeds: dict[tuple[str, str], list[int]] = defaultdict(list)
    metric_of: dict[str, str] = {}
    for run in runs:
        name = metric if metric is not None and metric in run["test"] else run["metric"]
        key = (run.get("label", run["method"]), run["task"])
        scores[key].append(float(run["test"][name]))
        seeds[key].append(int(run["seed"]))
        metric_of[run["task"]] = name
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
            out[run.get("label") or series_label(run)].append((np.asarray(steps), np.asarray(values, dtype=float)))
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
    parser.add_argument("--metric", default=None,
                        help="report this test metric instead of each task's headline one where a run has it, e.g. "
                             "accuracy (a paper's metric beside ours); writes report_<metric>.md / .csv")
    args = parser.parse_args(argv)
    runs = collect(args.root)
    if not runs:
        raise SystemExit(f"prompt-bench-report: error: no finished runs (results.json) under {args.root}")
    label_runs(runs)
    table = aggregate(runs, args.metric)
    text = markdown(table)
    stem = "report" if args.metric is None else f"report_{args.metric}"
    (args.root / f"{stem}.md").write_text(text + "\n")
    write_csv(table, args.root / f"{stem}.csv")
    print(text)
    print(f"\n{len(runs)} runs; written to {args.root / f'{stem}.md'} and {args.root / f'{stem}.csv'}")
    if args.metric is not None:
        return
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
