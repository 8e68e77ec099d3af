"""The report's table as LaTeX to paste into a paper: booktabs rules, mean ± std over seeds, the best of each
column in bold, and the report's significance marks (see report.legend); needs \\usepackage{booktabs}."""

from __future__ import annotations

from typing import Any

import numpy as np

from prompt_bench.significance import ALPHA, Analysis

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
MARKS = {"below_best": r"\downarrow", "like_majority": r"\dagger", "below_majority": r"\ddagger"}


def escape(text: str) -> str:
    return "".join(_SPECIAL.get(char, char) for char in text)


def _cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "--"
    mean = f"{100 * cell['mean']:.1f}"
    text = (rf"\textbf{{{mean}}}" if cell.get("best") else mean) + rf" $\pm$ {100 * cell['std']:.1f}"
    marks = "".join(mark for flag, mark in MARKS.items() if cell.get(flag))
    return text + (f"$^{{{marks}}}$" if marks else "")


def table(cells: dict[tuple[str, str], dict[str, Any]], analysis: Analysis | None = None) -> str:
    methods = sorted({m for m, _ in cells})
    tasks = sorted({t for _, t in cells})
    metric = {t: next(c["metric"] for (_, tt), c in cells.items() if tt == t) for t in tasks}
    lines = [
        r"% prompt-bench-report: \usepackage{booktabs} in the preamble",
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\begin{tabular}{l" + "c" * (len(tasks) + 1) + "}", r"\toprule",
        "Method & " + " & ".join(f"{escape(t)} ({escape(metric[t])})" for t in tasks) + r" & Avg. \\",
        r"\midrule",
    ]
    if analysis is not None and analysis.baselines:
        for kind, name in (("majority", "Majority class"), ("random", "Uniform random")):
            values = [analysis.baselines.get(t, {}).get(kind) for t in tasks]
            average = "--" if None in values else f"{100 * np.mean(values):.1f}"
            lines.append(f"{name} & " + " & ".join("--" if v is None else f"{100 * v:.1f}" for v in values)
                         + rf" & {average} \\")
        lines.append(r"\midrule")
    for method in methods:
        row = [cells.get((method, t)) for t in tasks]
        average = "--" if None in row else f"{100 * np.mean([c['mean'] for c in row]):.1f}"
        lines.append(escape(method) + " & " + " & ".join(_cell(c) for c in row) + rf" & {average} \\")
    seeds = sorted({c["n"] for c in cells.values()})
    caption = (f"Test scores (\\%), mean $\\pm$ std over {'/'.join(map(str, seeds))} seeds. Bold: best in its column. "
               f"$^\\downarrow$: significantly below the column's best; $^\\dagger$: not distinguishable from the "
               f"majority class, $^\\ddagger$: significantly below it (paired tests over seeds and test examples, "
               f"Holm-adjusted $p<{ALPHA}$).")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}"]
    return "\n".join(lines)
