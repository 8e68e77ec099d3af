"""Prompt Recycling benchmark (not a test): recycle every source prompt in a folder to a target model with each
recycler, score the recycled prompts on the task's test split on the target, and compare with the target's
zero-shot manual prompt and with random prompts of the same length.

    python scripts/recycle_grid.py outputs/closing/issue2/sst2/prompt_tuning/minilm --target smollm2 --limit-test 200

SOURCES: folders searched for prompt.safetensors (any prompt-bench run folders: a sweep of prompt_tuning over seeds
and tasks, say); each prompt's prompt.json names its task, its task style (template + label words) and source model. Per (task, recycler) it reports the
mean test metric of the recycled prompts, the zero-shot manual prompt's score (method=manual: template +
verbalizer, no prompt), the mean score of random prompts (one per source prompt, drawn as
`initial_prompt("random", L, target embeddings, seed)` with that source run's seed) and the success rate: the
fraction of source prompts whose recycled version beats the zero-shot baseline (Lester et al. 2022's measure).
Uncertainty, as prompt-bench-report computes it (prompt_bench/stats.py): each mean gets a 95% interval over source
prompts (one per seed) and test examples; the recycled prompts are compared, paired example by example and seed by
seed, with the zero-shot prompt, with the random prompts and with the majority class (Holm-adjusted p within each
kind of comparison); the majority class and uniform random scores of the scored examples are printed beside them.
The JSON keeps every prompt's per-example predictions and the gold labels, so later analysis needs no re-run.
--tuned-on-target FOLDERS adds the upper reference: prompts tuned directly on the target (prompt-bench runs of the
same tasks), scored on the same test examples as the recycled ones.
Each recycler is fitted once per source model (word list and map do not depend on the prompt) with exactly the
code `method=recycling` runs. Prints a markdown table and writes JSON (default outputs/bench/recycle_grid.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from prompt_bench import predictions, significance, stats  # noqa: E402
from prompt_bench.batching import encode_split  # noqa: E402
from prompt_bench.methods.base import Solution  # noqa: E402
from prompt_bench.models import ModelSpec, build_backbone  # noqa: E402
from prompt_bench.prompts.soft import initial_prompt  # noqa: E402
from prompt_bench.recycling import RECYCLERS, fit_map, load_embeddings, read_source, shared_word_list  # noqa: E402
from prompt_bench.recycling import source_model_spec  # noqa: E402
from prompt_bench.tasks import loading, metrics  # noqa: E402
from prompt_bench.tasks.spec import TaskSpec  # noqa: E402


def conf(group: str, name: str) -> dict:
    file = ROOT / "conf" / group / f"{name}.yaml"
    if not file.is_file():
        known = ", ".join(sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")))
        raise SystemExit(f"recycle_grid: no conf/{group}/{name}.yaml (known: {known})")
    return OmegaConf.to_container(OmegaConf.load(file), resolve=True)


def find_sources(folders: list[Path]) -> list:
    files = sorted({p.resolve() for folder in folders for p in
                    ([folder] if folder.is_file() else folder.rglob("prompt.safetensors"))})
    if not files:
        raise SystemExit(f"recycle_grid: no prompt.safetensors under {', '.join(map(str, folders))}")
    return [read_source(f) for f in files]


def source_score(source) -> float | None:
    """The source prompt's own test score on its source model, from its run's results.json."""
    results = source.path.parent / "results.json"
    if not results.is_file():
        return None
    data = json.loads(results.read_text())
    return data.get("test", {}).get(data.get("metric"))


def limited(examples: list, limit: int | None) -> list:
    if not limit or limit >= len(examples):
        return examples
    keep = sorted(random.Random(0).sample(range(len(examples)), limit))  # fixed subset: every prompt sees the same
    return [examples[i] for i in keep]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def uncertainty(manual: predictions.Predictions, recycled: dict[str, np.ndarray], randoms: np.ndarray,
                tuned: np.ndarray | None) -> dict:
    """Intervals and paired comparisons on one task's scored examples. `manual` is the zero-shot prompt's predictions
    (with the labels, metric and classes every other row shares), `recycled[name]` [S, N] and `randoms` [S, N] one row per
    source prompt (row i of each comes from the same source seed, so they pair), `tuned` [T, N] or None the prompts
    tuned on the target. Scores in [0, 1] (Matthews in [-1, 1]); p-values before any multiple-comparison correction."""

    def part(rows: np.ndarray) -> list[stats.Part]:
        return [stats.Part(manual.metric, manual.labels, np.atleast_2d(rows), manual.n_classes, manual.groups)]

    def shown(estimate: stats.Estimate) -> dict:
        return {"mean": estimate.mean, "low": estimate.low, "high": estimate.high, "p": estimate.p}

    n_seeds = len(randoms)
    constant = np.repeat(manual.preds[None], n_seeds, axis=0)  # the zero-shot prompt has no seed: the same row for each
    out = {"baselines": stats.baselines(part(manual.preds)),
           "random": shown(stats.interval(part(randoms))), "recyclers": {},
           "tuned_on_target": shown(stats.interval(part(tuned))) if tuned is not None and len(tuned) else None}
    for name, rows in recycled.items():
        mine = part(rows)
        out["recyclers"][name] = {"score": shown(stats.interval(mine)),
                                  "vs_manual": shown(stats.paired(mine, part(constant))),
                                  "vs_random": shown(stats.paired(mine, part(randoms))),
                                  "vs_majority": shown(stats.paired(mine, stats.majority(mine)))}
    return out


def adjust(report_tasks: dict) -> None:
    """Holm-adjust each kind of comparison over every (task, recycler) of the table: one family per kind."""
    for kind in ("vs_manual", "vs_random", "vs_majority"):
        cells = [r[kind] for t in report_tasks.values() for r in t["uncertainty"]["recyclers"].values()]
        for cell, p in zip(cells, stats.holm([c["p"] for c in cells])):
            cell["p_holm"] = p


def ci(cell: dict) -> str:
    return f"{cell['mean'] * 100:.2f} [{cell['low'] * 100:.2f}, {cell['high'] * 100:.2f}]"


def diff(cell: dict) -> str:
    return f"{cell['mean'] * 100:+.2f} [{cell['low'] * 100:+.2f}, {cell['high'] * 100:+.2f}], p {cell['p_holm']:.2g}"


def against_majority(cell: dict) -> str:
    """† not distinguishable from the majority class, ‡ significantly below it (as the report marks cells)."""
    if cell["p_holm"] >= significance.ALPHA:
        return " †"
    return " ‡" if cell["mean"] < 0 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", type=Path, help="folders searched for prompt.safetensors (or the files)")
    parser.add_argument("--target", required=True, help="target model: a conf/model name (smollm2, minilm, ...)")
    parser.add_argument("--target-path", help="the target's weights folder (model.path), e.g. with --target local")
    parser.add_argument("--target-family", help="the target's family when --target-path is given")
    parser.add_argument("--recyclers", default=",".join(RECYCLERS))
    parser.add_argument("--n-words", type=int, default=4000)
    parser.add_argument("--word-skip", type=int, default=1000)
    parser.add_argument("--n-heldout", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0, help="v2v_nn initialisation and shuffling")
    parser.add_argument("--nn-epochs", type=int, default=25)
    parser.add_argument("--limit-test", type=int, default=None, help="score on a fixed random subset of the test split")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true", help="the target in bf16 (compute.bf16): CUDA or a CPU with AVX512-BF16/AMX")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--mirror", default="auto")
    parser.add_argument("--tuned-on-target", nargs="*", type=Path, default=[],
                        help="folders of prompt-bench runs trained on the target itself: the upper reference")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "recycle_grid.json")
    args = parser.parse_args()
    recyclers = [r.strip() for r in args.recyclers.split(",") if r.strip()]
    unknown = set(recyclers) - set(RECYCLERS)
    if unknown:
        raise SystemExit(f"recycle_grid: unknown recyclers {sorted(unknown)}: use {', '.join(RECYCLERS)}")
    started = time.perf_counter()

    sources = find_sources(args.sources)
    by_task = defaultdict(list)
    for source in sources:
        if not source.meta.get("task"):
            raise SystemExit(f"recycle_grid: {source.path} has no prompt.json naming its task")
        by_task[source.meta["task"]].append(source)

    tuned = defaultdict(list)
    for prompt in find_sources(args.tuned_on_target) if args.tuned_on_target else []:
        if prompt.meta.get("model") != args.target:
            raise SystemExit(f"recycle_grid: --tuned-on-target {prompt.path} was trained on {prompt.meta.get('model')}, "
                             f"not on the target {args.target}")
        tuned[prompt.meta.get("task")].append(prompt)

    target_cfg = conf("model", args.target)
    if args.target_path:
        target_cfg.update(path=args.target_path, package=None, id=None)
    if args.target_family:
        target_cfg["family"] = args.target_family
    t0 = time.perf_counter()
    target = build_backbone(ModelSpec.from_config(target_cfg), device=args.device, bf16=args.bf16)
    load_target_s = time.perf_counter() - t0
    print(f"target {target.spec.name} ({target.family}, {target.hidden_size}-d) loaded in {load_target_s:.1f} s; "
          f"{len(sources)} source prompts", flush=True)

    # Fit each recycler once per source model: (spec name, recycler) -> (fitted map, facts).
    maps: dict[tuple, tuple] = {}
    for spec in {source_model_spec(s) for s in sources}:
        tokenizer, embeddings = load_embeddings(spec)
        t0 = time.perf_counter()
        words = shared_word_list(tokenizer, target.tokenizer, args.n_words, args.word_skip, args.n_heldout)
        words_s = time.perf_counter() - t0
        for name in recyclers:
            t0 = time.perf_counter()
            fitted, info = fit_map(words, embeddings, target.word_embeddings.weight.detach().float().cpu(), name,
                                   seed=args.seed, nn={"epochs": args.nn_epochs})
            info.update(fit_s=round(time.perf_counter() - t0, 2), word_list_s=round(words_s, 2))
            maps[(spec, name)] = (fitted, info)
            held = info["heldout_error"] or {}
            print(f"  {spec.name} -> {target.spec.name} {name}: {info['n_fit_words']} words "
                  f"(of {info['n_shared_words']} shared), held-out relative error {held.get('relative_error', float('nan')):.3f}, "
                  f"cosine {held.get('cosine', float('nan')):.3f}, fit {info['fit_s']:.1f} s", flush=True)

    root = loading.mirror_root(args.mirror)
    report = {"target": target.spec.name, "target_family": target.family, "target_width": target.hidden_size,
              "bf16": args.bf16, "limit_test": args.limit_test, "n_words": args.n_words, "word_skip": args.word_skip, "tasks": {}}
    rows = []
    for task_name, task_sources in sorted(by_task.items()):
        # score with the template and label words the source prompts were trained with (their prompt.json's task_style,
        # e.g. recycling_grid's T5 text-to-text "sentence: ..." with negative / positive)
        styles = {s.meta.get("task_style") for s in task_sources}
        if len(styles) > 1:
            raise SystemExit(f"recycle_grid: the {task_name} source prompts were trained with different task styles "
                             f"{sorted(map(str, styles))}: recycle each style's prompts separately")
        task = TaskSpec.from_config({**conf("task", task_name), "style": styles.pop()})
        key = metrics.primary(task.metric)
        test_examples = limited(loading.load_split(task, "test", root).examples, args.limit_test)
        longest = max(s.prompt.shape[0] for s in task_sources)
        test = encode_split(test_examples, task, target, longest)

        def score(prompt, split=test):
            """(headline score, per-example predictions, seconds)"""
            t0 = time.perf_counter()
            found = predictions.of_split(Solution(prompt=prompt).scorer(target), split, task.metric, args.eval_batch_size)
            return found.scores()[key], found, time.perf_counter() - t0

        manual, gold, manual_s = score(None)
        print(f"{task_name}: {len(test)} test examples; zero-shot manual {key} {manual:.4f} ({manual_s:.1f} s)", flush=True)
        on_target, on_target_preds = [], []
        for prompt in tuned.get(task_name, []):
            own = test if prompt.prompt.shape[0] == longest else encode_split(test_examples, task, target, prompt.prompt.shape[0])
            value, found, _ = score(prompt.prompt, own)
            on_target.append(value)
            on_target_preds.append(found.preds)
            print(f"  tuned on the target {prompt.path.parent.name}: {value:.4f}", flush=True)
        per_prompt, random_rows, recycled_rows = [], [], defaultdict(list)
        for source in task_sources:
            length, seed = source.prompt.shape[0], int(source.meta.get("seed", 0))
            rand = initial_prompt("random", length, target.word_embeddings.weight, seed)
            random_score, random_found, _ = score(rand)
            random_rows.append(random_found.preds)
            entry = {"source": str(source.path), "source_model": source.meta.get("model"), "seed": seed,
                     "tokens": length, "source_test": source_score(source), "random": random_score, "recycled": {},
                     "random_preds": random_found.preds.tolist(), "recycled_preds": {}}
            for name in recyclers:
                fitted, _ = maps[(source_model_spec(source), name)]
                value, found, seconds = score(fitted(source.prompt))
                entry["recycled"][name] = value
                entry["recycled_preds"][name] = found.preds.tolist()
                recycled_rows[name].append(found.preds)
                print(f"  {source.path.parent.name} {name}: {value:.4f} (random {random_score:.4f}, {seconds:.1f} s)",
                      flush=True)
            per_prompt.append(entry)
        certainty = uncertainty(gold, {name: np.stack(rows) for name, rows in recycled_rows.items()},
                                np.stack(random_rows), np.stack(on_target_preds) if on_target_preds else None)
        task_report = {"metric": key, "n_test": len(test), "manual": manual, "prompts": per_prompt, "recyclers": {},
                       "tuned_on_target": on_target, "uncertainty": certainty,
                       "labels": gold.labels.tolist(), "manual_preds": gold.preds.tolist(),
                       "tuned_on_target_preds": [p.tolist() for p in on_target_preds]}
        randoms = [p["random"] for p in per_prompt]
        sources_on_source = [p["source_test"] for p in per_prompt if p["source_test"] is not None]
        for name in recyclers:
            values = [p["recycled"][name] for p in per_prompt]
            mean, std = mean_std(values)
            wins = sum(v > manual for v in values)
            infos = [info for (spec, n), (_, info) in maps.items() if n == name]
            summary = {"mean": mean, "std": std, "n": len(values), "success_rate": wins / len(values),
                       "random_mean": statistics.fmean(randoms), "manual": manual,
                       "heldout_relative_error": [i["heldout_error"]["relative_error"] if i["heldout_error"] else None
                                                  for i in infos],
                       "map": infos}
            task_report["recyclers"][name] = summary
            rows.append((task_name, name, summary, sources_on_source, certainty))
        report["tasks"][task_name] = task_report
    adjust(report["tasks"])

    report["wall_time_s"] = round(time.perf_counter() - started, 1)
    report["load_target_s"] = round(load_target_s, 1)
    report["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "device": str(target.device),
                         "threads": torch.get_num_threads()}
    header = ("| task | recycler | prompts | recycled: mean ± std [95% CI] | majority class / uniform random | "
              "zero-shot manual | recycled − zero-shot [95% CI], p (Holm) | random prompt [95% CI] | "
              "recycled − random [95% CI], p (Holm) | success rate | map held-out rel. error | "
              "source prompt on its own model (its full test split) | prompt tuned on the target [95% CI] |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for task_name, name, s, on_source, found in rows:
        held = ", ".join(f"{e:.3f}" for e in s["heldout_relative_error"] if e is not None) or "-"
        own = f"{statistics.fmean(on_source) * 100:.2f}" if on_source else "-"
        mine, base = found["recyclers"][name], found["baselines"]
        upper = ci(found["tuned_on_target"]) if found["tuned_on_target"] else "-"
        lines.append(f"| {task_name} | {name} | {s['n']} | {s['mean'] * 100:.2f} ± {s['std'] * 100:.2f} "
                     f"[{mine['score']['low'] * 100:.2f}, {mine['score']['high'] * 100:.2f}]"
                     f"{against_majority(mine['vs_majority'])} | {base['majority'] * 100:.2f} / {base['random'] * 100:.2f} | "
                     f"{s['manual'] * 100:.2f} | {diff(mine['vs_manual'])} | {ci(found['random'])} | "
                     f"{diff(mine['vs_random'])} | {s['success_rate'] * 100:.0f}% | {held} | {own} | {upper} |")
    table = "\n".join(lines)
    print()
    print(f"Recycled to {target.spec.name} ({target.hidden_size}-d); test metric in %"
          + (f", on a fixed random subset of {args.limit_test} test examples (seed 0)" if args.limit_test else "")
          + (", target in bf16" if args.bf16 else "") + ":")
    print(table)
    print(f"\n{stats.describe()} †: recycled prompts not distinguishable from the majority class, ‡: significantly "
          "below it (paired test against always predicting the most frequent label of the scored examples); no mark: "
          "significantly above it. The zero-shot prompt has no seed: its one prediction pairs with every source prompt.")
    print(f"\nwall time {report['wall_time_s']} s")
    report["table"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
