"""The one-screen summary printed at the end of a run (or when a finished run is asked for again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(results: dict[str, Any], run_dir: Path, skipped: bool = False) -> None:
    metric = results["metric"]
    table = Table(title="prompt-bench" + (" (already finished: nothing was rerun)" if skipped else ""), show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # long paths wrap instead of being cut off
    budget = results.get("budget_used")
    budget_text = f"{budget} {results.get('budget_unit', '')}".strip()
    if results.get("budget"):
        budget_text += f" of {results['budget']}"
    if results.get("scale"):  # which sizes ran: the paper's, or the CPU demo's a packaged model chooses
        budget_text += f" (scale={results['scale']})"
    rows = [
        ("task", f"{results['task']} ({results['setting']}, seed {results['seed']}, "
                 f"{results['n_train']} train / {results['n_dev']} dev / {results['n_test']} test)"),
        ("method", results["method"]),
        ("model", f"{results['model']} on {results.get('device', '?')}"
                  + (f", {results['precision']}" if results.get("precision") else "")),
        (f"test {metric}", f"{results['test'][metric]:.4f}"),
        (f"dev {metric}", f"{results['dev'][metric]:.4f}"),
        ("budget used", budget_text),
        ("wall time", f"{results['wall_time_s']:.1f} s"),
        ("peak memory", f"{results['peak_memory_mb']:.0f} MB"),
        ("run folder", str(run_dir)),
    ]
    if results.get("wandb_url"):
        rows.append(("W&B", results["wandb_url"]))
    others = {k: v for k, v in results["test"].items() if k != metric}
    if others:
        rows.insert(4, ("test (other)", ", ".join(f"{k} {v:.4f}" for k, v in others.items())))
    for note in results.get("data_notes") or []:
        rows.append(("data note", note))
    for key, value in rows:
        table.add_row(key, value)
    Console(soft_wrap=False).print(table)
