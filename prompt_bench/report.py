"""Run folders -> paper-style tables, with no W&B needed: method x task, mean ± std over seeds, a 95%
confidence interval over seeds and test examples, the majority-class and random baselines, which cells are
distinguishable from the majority class and from their column's best (significance.py, stats.py); as
Markdown, CSV and a booktabs LaTeX table (latex.py); paired comparisons with --compare; plots."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from prompt_bench import latex, significance, stats
from prompt_bench.significance import Analysis


def collect(root: Path) -> list[dict[str, Any]]:
    """Every finished run (a results.json) under `root`; an unreadable one is skipped with a warning naming it,
    so one corrupt file does not hide the rest of a sweep."""
    runs = []
    for path in sorted(Path(root).rglob("results.json")):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(results, dict) or not {"task", "method", "test", "metric"} <= set(results):
                raise ValueError("not a prompt-bench results.json")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            print(f"prompt-bench-report: warning: skipping {path} ({str(err).splitlines()[0]}): "
                  "re-run that configuration to rewrite it", file=sys.stderr)
            continue
        runs.append(results | {"run_dir": str(path.parent)})
    return runs


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
    the method settings that vary between runs of that method on one task and differ from the method's
    defaults, e.g. `dynamic_prompting (dp.position="off")`, so an ablation is never averaged into the full
    method. A setting that only changes with the task (a task's own default, e.g. BBT's hinge loss on RTE and
    MRPC) labels nothing: the method keeps one row across its tasks."""
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
        per_task: dict[tuple[Any, str], set] = defaultdict(set)
        for run, (flat, _) in zip(group, settings):
            for k in keys:
                per_task[(run.get("task"), k)].add(flat.get(k))
        varying = sorted({k for (_, k), values in per_task.items() if len(values) > 1})
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
    `metric` (e.g. accuracy, which every task reports: DPT's metric on CB and MultiRC) where a run has it; and the
    cell's runs. The label is `run["label"]` (see label_runs), else the method."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        cells[(run.get("label", run["method"]), run["task"])].append(run)
    table = {}
    for key, group in cells.items():
        group = sorted(group, key=lambda r: int(r["seed"]))
        name = metric if metric is not None and all(metric in r["test"] for r in group) else group[0]["metric"]
        values = [float(r["test"][name]) for r in group]
        table[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values),
                      "seeds": [int(r["seed"]) for r in group], "metric": name, "runs": group}
    return table


MARKS = {"below_best": "↓", "like_majority": "†", "below_majority": "‡"}
BASELINES = (("majority", "majority class"), ("random", "uniform random"))


def _columns(table: dict[tuple[str, str], dict[str, Any]]) -> tuple[list[str], list[str], dict[str, str]]:
    methods = sorted({m for m, _ in table})
    tasks = sorted({t for _, t in table})
    return methods, tasks, {t: next(v["metric"] for (m, tt), v in table.items() if tt == t) for t in tasks}


def _baseline_average(analysis: Analysis | None, tasks: list[str], kind: str) -> float | None:
    if analysis is None or any(t not in analysis.baselines for t in tasks):
        return None
    return float(np.mean([analysis.baselines[t][kind] for t in tasks]))


def markdown(table: dict[tuple[str, str], dict[str, Any]], analysis: Analysis | None = None) -> str:
    """The method x task table: mean ± std over seeds, [95% CI] and markers where predictions allow (see
    `legend`), the baselines as rows, and the average over tasks."""
    methods, tasks, metric_names = _columns(table)
    head = "| method | " + " | ".join(f"{t} ({metric_names[t]})" for t in tasks) + " | average |"
    lines = [head, "|" + "---|" * (len(tasks) + 2)]
    if analysis is not None and analysis.baselines:
        for kind, name in BASELINES:
            cells = [f"{100 * analysis.baselines[t][kind]:.2f}" if t in analysis.baselines else "–" for t in tasks]
            average = _baseline_average(analysis, tasks, kind)
            cells.append("–" if average is None else f"{100 * average:.2f}")
            lines.append(f"| *{name}* | " + " | ".join(cells) + " |")
    for method in methods:
        cells, means = [], []
        for task in tasks:
            cell = table.get((method, task))
            if cell is None:
                cells.append("–")
                continue
            means.append(cell["mean"])
            mean = f"{100 * cell['mean']:.2f}"
            text = (f"**{mean}**" if cell.get("best") else mean) + f" ± {100 * cell['std']:.2f}"
            if "ci" in cell:
                text += f" [{100 * cell['ci'][0]:.2f}, {100 * cell['ci'][1]:.2f}]"
            marks = "".join(mark for flag, mark in MARKS.items() if cell.get(flag))
            cells.append(f"{text} (n={cell['n']})" + (f" {marks}" if marks else ""))
        average = f"{100 * np.mean(means):.2f}" if len(means) == len(tasks) else "–"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {average} |")
    return "\n".join(lines)


def legend(analysis: Analysis, n_boot: int = stats.BOOTSTRAP) -> str:
    """What the table's numbers and marks mean, and how the intervals and tests were computed."""
    alpha = significance.ALPHA
    text = [
        "mean ± std over seeds (std with ddof=0, as LM-BFF), [95% confidence interval over seeds and test "
        "examples], (n = seeds). Bold: the best mean of a column with several methods. "
        f"↓: significantly below its column's best (paired test, Holm-adjusted p < {alpha} over the "
        f"{analysis.best_tests} comparisons with a best). †: not distinguishable from the majority class, "
        "‡: significantly below it (paired test against always predicting the most frequent test label, "
        f"Holm-adjusted over the {analysis.majority_tests} cells; no mark: significantly above it). Baseline "
        "rows: the majority class, and the expected score of uniform random predictions, from the test labels.",
        "Method: " + stats.describe(n_boot),
    ]
    return "\n\n".join(text + analysis.notes)


CSV_COLUMNS = ["method", "task", "metric", "mean", "std", "n", "seeds", "ci_low", "ci_high", "best",
               "diff_vs_best", "p_vs_best", "p_vs_best_holm", "diff_vs_majority", "p_vs_majority", "p_vs_majority_holm",
               "majority", "random"]


def csv_rows(table: dict[tuple[str, str], dict[str, Any]], analysis: Analysis | None = None) -> list[list[Any]]:
    """One row per cell (CSV_COLUMNS; blank where predictions are missing), then the baselines as rows."""
    rows = []
    for (method, task), cell in sorted(table.items()):
        base = analysis.baselines.get(task, {}) if analysis else {}
        best, major = cell.get("vs_best"), cell.get("vs_majority")
        ci = cell.get("ci", ("", ""))
        rows.append([method, task, cell["metric"], cell["mean"], cell["std"], cell["n"], " ".join(map(str, cell["seeds"])),
                     ci[0], ci[1], bool(cell.get("best")),
                     best.mean if best else "", best.p if best else "", best.p_holm if best else "",
                     major.mean if major else "", major.p if major else "", major.p_holm if major else "",
                     base.get("majority", ""), base.get("random", "")])
    if analysis:
        for task, base in sorted(analysis.baselines.items()):
            metric = next(c["metric"] for (_, t), c in table.items() if t == task)
            for kind, name in BASELINES:
                rows.append([name, task, metric, base[kind], 0.0] + [""] * (len(CSV_COLUMNS) - 5))
    return rows


def write_csv(table: dict[tuple[str, str], dict[str, Any]], path: Path, analysis: Analysis | None = None) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_rows(table, analysis))


COMPARE_COLUMNS = ["a", "b", "task", "metric", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p", "p_holm",
                   "significant", "mcnemar_p_per_seed", "seeds"]


def compare_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[r["a"], r["b"], r["task"], r["metric"], r["mean_a"], r["mean_b"], r["diff"].mean, r["diff"].low,
             r["diff"].high, r["diff"].p, r["diff"].p_holm, r["diff"].p_holm < significance.ALPHA,
             "" if r["mcnemar"] is None else " ".join(f"{p:.3g}" for p in r["mcnemar"]), " ".join(map(str, r["seeds"]))]
            for r in rows]


def compare_markdown(rows: list[dict[str, Any]], notes: list[str]) -> str:
    lines = ["| A | B | task (metric) | score A | score B | A − B [95% CI] | p | p (Holm) | McNemar p per seed | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = r["diff"]
        marked = "**" if diff.p_holm < significance.ALPHA else ""
        mcnemar = "–" if r["mcnemar"] is None else " / ".join(f"{p:.3g}" for p in r["mcnemar"])
        lines.append(
            f"| {r['a']} | {r['b']} | {r['task']} ({r['metric']}) | {100 * r['mean_a']:.2f} | {100 * r['mean_b']:.2f} | "
            f"{marked}{100 * diff.mean:+.2f}{marked} [{100 * diff.low:+.2f}, {100 * diff.high:+.2f}] | {diff.p:.3g} | "
            f"{diff.p_holm:.3g} | {mcnemar} | {' '.join(map(str, r['seeds']))} |")
    text = "\n".join(lines)
    text += (f"\n\nA − B in points (bold: significant, Holm-adjusted p < {significance.ALPHA} over the {len(rows)} "
             "comparisons shown); seeds paired; McNemar: exact test per seed on accuracy tasks.")
    return "\n\n".join([text, *notes])


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


def _seed_band(values: np.ndarray, level: float = stats.LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """A 95% t-interval of the mean over seeds (rows) at each point; the mean itself for a single seed."""
    mean = values.mean(0)
    if len(values) < 2:
        return mean, mean
    from scipy.stats import t

    half = t.ppf(0.5 + level / 2, len(values) - 1) * values.std(0, ddof=1) / np.sqrt(len(values))
    return mean - half, mean + half


def plot_curves(runs: list[dict[str, Any]], task: str, keys: list[str], path: Path, xlabel: str) -> Path | None:
    """One panel per metric key; one line per method (mean over seeds) with a band: the 95% confidence
    interval over seeds (t; the curves keep one number per seed and step, not per-example predictions)."""
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
            ax.fill_between(grid, *_seed_band(values), alpha=0.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(key)
        ax.set_title(f"{task} (band: 95% CI over seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_scores(table: dict[tuple[str, str], dict[str, Any]], analysis: Analysis, task: str, path: Path) -> Path | None:
    """Each method's test score on `task` with its 95% CI over seeds and test examples (± std where the runs
    kept no predictions), and the majority-class and uniform-random baselines as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted(((label, cell) for (label, t), cell in table.items() if t == task), reverse=True)
    if not any("ci" in cell for _, cell in cells):
        return None
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.45 * len(cells)))
    for row, (label, cell) in enumerate(cells):
        low, high = cell.get("ci", (cell["mean"] - cell["std"], cell["mean"] + cell["std"]))
        ax.errorbar(100 * cell["mean"], row, xerr=[[100 * (cell["mean"] - low)], [100 * (high - cell["mean"])]],
                    fmt="o", capsize=4, color="C0" if "ci" in cell else "C7")
    for (kind, name), style in zip(BASELINES, ("--", ":")):
        if task in analysis.baselines:
            ax.axvline(100 * analysis.baselines[task][kind], linestyle=style, color="C3", label=name)
    ax.set_yticks(range(len(cells)), [label for label, _ in cells])
    ax.set_xlabel(f"test {cells[0][1]['metric']} (95% CI over seeds and test examples)")
    ax.set_title(task)
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.6, len(cells) - 0.4)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prompt-bench-report", description=__doc__)
    parser.add_argument("root", type=Path, help="a sweep or outputs folder holding run folders")
    parser.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
                        help="paired comparison of two methods (table labels) on every task both ran; repeatable")
    parser.add_argument("--bootstrap", type=int, default=stats.BOOTSTRAP, help="bootstrap resamples of the test set")
    parser.add_argument("--seed", type=int, default=stats.SEED, help="seed of the resampling (results are deterministic)")
    parser.add_argument("--wandb", choices=("auto", "online", "offline", "disabled"), default="auto",
                        help="log the tables to a W&B run: auto = only when W&B is reachable online (an API key)")
    parser.add_argument("--metric", default=None,
                        help="report this test metric instead of each task's headline one where a run has it, e.g. "
                             "accuracy (a paper's metric beside ours), with its intervals, baselines and comparisons "
                             "recomputed from the kept predictions; writes report_<metric>.* and compare_<metric>.*")
    args = parser.parse_args(argv)
    runs = collect(args.root)
    if not runs:
        raise SystemExit(f"prompt-bench-report: error: no finished runs (results.json) under {args.root}")
    label_runs(runs)
    table = aggregate(runs, args.metric)
    analysis = significance.analyse(table, args.bootstrap, args.seed)
    text = markdown(table, analysis) + "\n\n" + legend(analysis, args.bootstrap)
    suffix = "" if args.metric is None else f"_{args.metric}"  # the headline report is kept beside another metric's
    written = [args.root / f"report{suffix}.md", args.root / f"report{suffix}.csv", args.root / f"report{suffix}.tex"]
    written[0].write_text(text + "\n")
    write_csv(table, written[1], analysis)
    written[2].write_text(latex.table(table, analysis) + "\n")
    print(text)
    tables = {f"report{suffix}": (CSV_COLUMNS, csv_rows(table, analysis))}
    if args.compare:
        try:
            rows, notes = significance.compare(table, [tuple(pair) for pair in args.compare], args.bootstrap, args.seed)
        except ValueError as err:
            raise SystemExit(f"prompt-bench-report: error: {err}") from None
        compared = compare_markdown(rows, notes)
        (args.root / f"compare{suffix}.md").write_text(compared + "\n")
        with (args.root / f"compare{suffix}.csv").open("w", newline="") as out:
            csv.writer(out).writerows([COMPARE_COLUMNS, *compare_rows(rows)])
        written += [args.root / f"compare{suffix}.md", args.root / f"compare{suffix}.csv"]
        tables[f"compare{suffix}"] = (COMPARE_COLUMNS, compare_rows(rows))
        print("\n" + compared)
    print(f"\n{len(runs)} runs; written to {', '.join(str(p) for p in written)}")
    # the runs log their budget curves in their own metric only, so another metric's report draws no curves
    curves = () if suffix else (("api_calls", "API calls"), ("steps", "optimizer steps"))
    for task in sorted({r["task"] for r in runs}):
        metric = next(r["metric"] for r in runs if r["task"] == task)
        for unit, label in curves:
            chosen = [r for r in runs if r["task"] == task and r.get("budget_unit") == unit]
            png = plot_curves(chosen, task, [f"dev/{metric}", f"test/{metric}"],
                              args.root / "plots" / f"{task}_{unit}.png", label)
            if png is not None:
                print(f"plot: {png}")
        png = plot_scores(table, analysis, task, args.root / "plots" / f"{task}_test{suffix}.png")
        if png is not None:
            print(f"plot: {png}")
    if log_tables(tables, args.wandb, runs, args.root):
        print("tables logged to W&B")


def log_tables(tables: dict[str, tuple[list[str], list[list[Any]]]], mode: str, runs: list[dict[str, Any]],
               root: Path) -> bool:
    """The report's tables as wandb.Tables in a W&B run of the runs' project, grouped by the sweep folder."""
    from omegaconf import OmegaConf

    from prompt_bench.tracking import log_tables as to_wandb

    logger: dict[str, Any] = {}
    config_file = Path(runs[0]["run_dir"]) / "config.yaml"
    if config_file.is_file():
        logger = OmegaConf.to_container(OmegaConf.load(config_file)).get("logger") or {}
    return to_wandb(tables, mode, project=logger.get("project") or "prompt-bench", entity=logger.get("entity"),
                    group=Path(root).resolve().name, directory=Path(root))


if __name__ == "__main__":
    main()
