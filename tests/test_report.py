"""Run folders turn into a method x task table of mean ± std over seeds."""

import csv
import json

from prompt_bench.report import aggregate, collect, main, markdown


def write_run(root, method, task, seed, score, metric="accuracy"):
    folder = root / task / method / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(
        {"method": method, "task": task, "seed": seed, "metric": metric, "test": {metric: score}}))


def test_the_table_gives_mean_and_std_over_seeds_per_method_and_task(tmp_path):
    for seed, score in [(13, 0.5), (21, 0.7)]:
        write_run(tmp_path, "bbt", "sst2", seed, score)
    write_run(tmp_path, "bbt", "mrpc", 13, 0.8, metric="f1")
    table = aggregate(collect(tmp_path))
    assert table[("bbt", "sst2")]["mean"] == 0.6
    assert abs(table[("bbt", "sst2")]["std"] - 0.1) < 1e-9
    text = markdown(table)
    assert "60.00 ± 10.00 (n=2)" in text and "mrpc (f1)" in text and "| 70.00 |" in text


def test_the_report_command_writes_markdown_and_csv_beside_the_runs(tmp_path, capsys):
    write_run(tmp_path, "manual", "rte", 42, 0.5)
    main([str(tmp_path)])
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.csv").is_file()
    assert "manual" in capsys.readouterr().out


def test_curves_are_plotted_per_method_against_api_calls_from_run_folders(tmp_path):
    from prompt_bench.report import plot_curves

    runs = []
    for seed in (13, 21):
        write_run(tmp_path, "bbt", "sst2", seed, 0.6)
        folder = tmp_path / "sst2" / "bbt" / f"seed{seed}"
        (folder / "metrics.jsonl").write_text("".join(
            json.dumps({"step": step, "dev/accuracy": 0.5 + step / 1000 + seed / 1000}) + "\n" for step in (100, 200, 300)))
        runs.append(json.loads((folder / "results.json").read_text()) | {"run_dir": str(folder)})
    png = plot_curves(runs, "sst2", ["dev/accuracy", "test/accuracy"], tmp_path / "plot.png", "API calls")
    assert png.is_file() and png.stat().st_size > 1000
    assert plot_curves(runs, "rte", ["dev/accuracy"], tmp_path / "none.png", "API calls") is None


def write_config(root, method, task, seed, method_cfg, optimizer="cma", model="minilm"):
    import yaml

    folder = root / task / method / f"seed{seed}"
    (folder / "config.yaml").write_text(yaml.safe_dump(
        {"method": {"name": method, **method_cfg}, "optimizer": {"name": optimizer}, "model": {"name": model}}))


def test_ablations_and_baseline_optimizers_get_their_own_rows_and_shared_settings_do_not_show(tmp_path):
    from prompt_bench.report import label_runs

    for seed in (13, 21):
        for position in ("instance", "off"):
            method = "dynamic_prompting"
            root = tmp_path / position
            write_run(root, method, "cb", seed, 0.5 if position == "off" else 0.7)
            write_config(root, method, "cb", seed, {"dp": {"position": position, "length": "instance"}, "max_steps": 100})
        for optimizer in ("cma", "random_search"):
            root = tmp_path / optimizer
            write_run(root, "bbt", "cb", seed, 0.6)
            write_config(root, "bbt", "cb", seed, {"budget": 720}, optimizer=optimizer)
    runs = collect(tmp_path)
    label_runs(runs)
    table = aggregate(runs)
    # max_steps=100 (not the default 300) is shared by every dynamic_prompting run here, so it labels none
    assert set(table) == {("dynamic_prompting", "cb"), ("dynamic_prompting (dp.position=off)", "cb"),
                          ("bbt", "cb"), ("random_search", "cb")}
    assert table[("dynamic_prompting (dp.position=off)", "cb")]["mean"] == 0.5
    assert table[("dynamic_prompting", "cb")]["n"] == 2


def test_a_setting_that_only_changes_with_the_task_keeps_the_method_in_one_row(tmp_path):
    from prompt_bench.report import label_runs

    # BBT's task defaults: hinge loss on RTE, cross-entropy on SST-2; on SST-2 alone, 50 tokens (MiniLM's demo
    # default: 10) is an ablation
    for seed in (13, 21):
        write_run(tmp_path / "main", "bbt", "sst2", seed, 0.6)
        write_config(tmp_path / "main", "bbt", "sst2", seed, {"loss": "ce", "n_prompt_tokens": 10})
        write_run(tmp_path / "main", "bbt", "rte", seed, 0.55)
        write_config(tmp_path / "main", "bbt", "rte", seed, {"loss": "hinge", "n_prompt_tokens": 10})
        write_run(tmp_path / "long", "bbt", "sst2", seed, 0.58)
        write_config(tmp_path / "long", "bbt", "sst2", seed, {"loss": "ce", "n_prompt_tokens": 50})
    runs = collect(tmp_path)
    label_runs(runs)
    assert set(aggregate(runs)) == {("bbt", "sst2"), ("bbt", "rte"), ("bbt (n_prompt_tokens=50)", "sst2")}


# --- per-example predictions: intervals, baselines, paired comparisons, LaTeX, W&B ---

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from prompt_bench import predictions  # noqa: E402

LABELS = np.array([1] * 120 + [0] * 280)  # 400 test examples; the majority class (0) scores 70% accuracy


def write_predicted_run(root, method, task, seed, accuracy, labels=LABELS, metric="accuracy"):
    """A run folder with kept test predictions: right on a seeded `accuracy` share of examples."""
    rng = np.random.default_rng([seed, len(method)])
    n_classes = int(labels.max()) + 1
    preds = np.where(rng.random(len(labels)) < accuracy, labels, (labels + 1) % n_classes)
    kept = predictions.Predictions(metric, preds, labels, n_classes)
    write_run(root, method, task, seed, kept.scores()[metric], metric)
    predictions.save(root / task / method / f"seed{seed}", {"test": {task: kept}})


def analysed(root):
    from prompt_bench.significance import analyse

    table = aggregate(collect(root))
    return table, analyse(table, n_boot=300)


def test_each_cell_gets_a_confidence_interval_and_each_task_its_baselines_from_the_test_labels(tmp_path):
    for seed in (13, 21, 42):
        write_predicted_run(tmp_path, "bbt", "sst2", seed, 0.9)
    table, analysis = analysed(tmp_path)
    cell = table[("bbt", "sst2")]
    assert cell["ci"][0] < cell["mean"] < cell["ci"][1] and cell["ci"][1] - cell["ci"][0] < 0.1
    assert analysis.baselines["sst2"]["majority"] == 280 / 400
    assert analysis.baselines["sst2"]["random"] == pytest.approx(0.5, abs=0.01)
    text = markdown(table, analysis)
    assert "| *majority class* | 70.00 | 70.00 |" in text
    random_row = next(row for row in text.splitlines() if row.startswith("| *uniform random* |"))
    assert float(random_row.split("|")[2]) == pytest.approx(50, abs=0.5)
    assert f"[{100 * cell['ci'][0]:.2f}, {100 * cell['ci'][1]:.2f}] (n=3)" in text


def test_a_cell_at_the_majority_class_is_marked_and_one_above_it_or_below_it_is_told_apart(tmp_path):
    for seed in (13, 21, 42):
        write_predicted_run(tmp_path, "good", "rte", seed, 0.85)
        write_predicted_run(tmp_path, "trivial", "rte", seed, 0.70)  # about the majority class's 70%
        write_predicted_run(tmp_path, "broken", "rte", seed, 0.40)
    table, _ = analysed(tmp_path)
    assert not table[("good", "rte")]["like_majority"] and not table[("good", "rte")]["below_majority"]
    assert table[("trivial", "rte")]["like_majority"]
    assert table[("broken", "rte")]["below_majority"]
    rows = markdown(table, _).splitlines()
    assert "†" in next(r for r in rows if r.startswith("| trivial"))
    assert "‡" in next(r for r in rows if r.startswith("| broken"))
    assert not {"†", "‡"} & set(next(r for r in rows if r.startswith("| good")))


def test_the_best_of_a_column_is_bold_a_clearly_worse_method_is_marked_and_a_close_one_is_not(tmp_path):
    for seed in (13, 21, 42):
        write_predicted_run(tmp_path, "best", "sst2", seed, 0.90)
        write_predicted_run(tmp_path, "close", "sst2", seed, 0.895)
        write_predicted_run(tmp_path, "worse", "sst2", seed, 0.70)
    table, analysis = analysed(tmp_path)
    assert table[("best", "sst2")]["best"] and analysis.best_tests == 2
    assert table[("worse", "sst2")]["below_best"] and not table[("close", "sst2")]["below_best"]
    text = markdown(table, analysis)
    assert f"**{100 * table[('best', 'sst2')]['mean']:.2f}**" in text
    assert "↓" in next(r for r in text.splitlines() if r.startswith("| worse"))
    assert "↓" not in next(r for r in text.splitlines() if r.startswith("| close"))


def test_old_run_folders_without_predictions_still_report_with_a_note(tmp_path, capsys):
    write_run(tmp_path, "manual", "rte", 42, 0.5)  # written before predictions were kept
    for seed in (13, 21):
        write_predicted_run(tmp_path, "bbt", "rte", seed, 0.8)
    main([str(tmp_path), "--wandb", "disabled", "--bootstrap", "200"])
    text = (tmp_path / "report.md").read_text()
    assert "| manual | 50.00 ± 0.00 (n=1) |" in text and "manual on rte" in text
    assert "[" in next(r for r in text.splitlines() if r.startswith("| bbt"))


def test_compare_finds_a_planted_difference_and_none_between_a_method_and_its_copy(tmp_path, capsys):
    for seed in (13, 21, 42):
        write_predicted_run(tmp_path, "a", "sst2", seed, 0.90)
        write_predicted_run(tmp_path, "b", "sst2", seed, 0.75)
        for method in ("a", "c"):  # c: the very same predictions as a, under another name
            write_predicted_run(tmp_path / "copy", method, "sst2", seed, 0.90)
    (tmp_path / "copy" / "sst2" / "a").rename(tmp_path / "sst2" / "a_again")
    for folder in (tmp_path / "sst2" / "a_again").iterdir():
        record = json.loads((folder / "results.json").read_text())
        (folder / "results.json").write_text(json.dumps(record | {"method": "a_again"}))
    main([str(tmp_path), "--compare", "a", "b", "--compare", "a", "a_again", "--wandb", "disabled"])
    rows = list(csv.DictReader((tmp_path / "compare.csv").open()))
    planted, copy = rows
    assert planted["b"] == "b" and float(planted["diff"]) > 0.1 and float(planted["p_holm"]) < 0.01
    assert planted["significant"] == "True" and len(planted["mcnemar_p_per_seed"].split()) == 3
    assert copy["b"] == "a_again" and float(copy["diff"]) == 0 and float(copy["p"]) == 1 and copy["significant"] == "False"
    assert float(copy["p_holm"]) >= float(copy["p"])
    assert "Holm" in (tmp_path / "compare.md").read_text() and "a_again" in capsys.readouterr().out


def test_another_metric_gets_its_own_intervals_baselines_and_comparisons_recomputed_from_the_predictions(tmp_path):
    # a CB-like 3-class task reported in macro-F1, and in accuracy as DPT reports it (--metric accuracy)
    labels = np.array([0] * 200 + [1] * 150 + [2] * 50)
    for method, accuracy in (("good", 0.85), ("worse", 0.55)):
        for seed in (13, 21, 42):
            rng = np.random.default_rng([seed, len(method)])
            preds = np.where(rng.random(len(labels)) < accuracy, labels, (labels + 1) % 3)
            kept = predictions.Predictions("macro_f1", preds, labels, 3)
            folder = tmp_path / "cb" / method / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps(
                {"method": method, "task": "cb", "seed": seed, "metric": "macro_f1",
                 "test": {"macro_f1": kept.scores()["macro_f1"], "accuracy": float(np.mean(preds == labels))}}))
            predictions.save(folder, {"test": {"cb": kept}})
    main([str(tmp_path), "--metric", "accuracy", "--compare", "good", "worse", "--wandb", "disabled",
          "--bootstrap", "200"])
    text = (tmp_path / "report_accuracy.md").read_text()
    assert "cb (accuracy)" in text
    assert "| *majority class* | 50.00 |" in text  # 200 of 400 in class 0; its macro-F1 would be 22.22
    table = aggregate(collect(tmp_path), "accuracy")
    for method in ("good", "worse"):
        cell = table[(method, "cb")]
        row = next(r for r in text.splitlines() if r.startswith(f"| {method} "))
        by_hand = np.mean([json.loads((tmp_path / "cb" / method / f"seed{s}" / "results.json").read_text())["test"]
                           ["accuracy"] for s in (13, 21, 42)])
        assert cell["mean"] == pytest.approx(by_hand)
        low, high = (float(x) for x in row.split("[")[1].split("]")[0].split(","))
        assert low < 100 * by_hand < high and high - low < 15  # an accuracy interval, around the accuracy mean
    compared = (tmp_path / "compare_accuracy.md").read_text()
    diff = next(r for r in compared.splitlines() if r.startswith("| good | worse |"))
    assert "cb (accuracy)" in diff and "**+" in diff  # 30 points of accuracy apart: significant
    assert not (tmp_path / "report.md").exists()  # the headline report is a separate command, not overwritten


def test_a_multirc_cell_in_another_metric_shows_mean_and_std_only_and_the_report_says_why(tmp_path):
    # MultiRC's predictions score answers grouped by question; plain accuracy over answers is not what they give
    labels = np.array([0, 1] * 100)
    for seed in (13, 21):
        preds = np.random.default_rng(seed).integers(0, 2, len(labels))
        kept = predictions.Predictions("multirc", preds, labels, 2, np.arange(len(labels)) // 4)
        folder = tmp_path / "multirc" / "prompt_tuning" / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(
            {"method": "prompt_tuning", "task": "multirc", "seed": seed, "metric": "f1a",
             "test": {"f1a": kept.scores()["f1a"], "accuracy": float(np.mean(preds == labels))}}))
        predictions.save(folder, {"test": {"multirc": kept}})
    main([str(tmp_path), "--metric", "accuracy", "--wandb", "disabled", "--bootstrap", "100"])
    text = (tmp_path / "report_accuracy.md").read_text()
    row = next(r for r in text.splitlines() if r.startswith("| prompt_tuning"))
    assert "(n=2)" in row and "[" not in row
    assert "MultiRC cell reported in another metric" in text and "prompt_tuning on multirc" in text
    main([str(tmp_path), "--wandb", "disabled", "--bootstrap", "100"])  # in its own metric it has its interval
    assert "[" in next(r for r in (tmp_path / "report.md").read_text().splitlines() if r.startswith("| prompt_tuning"))


def test_compare_refuses_a_method_that_is_not_in_the_report(tmp_path):
    write_predicted_run(tmp_path, "a", "sst2", 13, 0.9)
    with pytest.raises(SystemExit, match="no method 'nope'.*use one of a"):
        main([str(tmp_path), "--compare", "a", "nope", "--wandb", "disabled"])


def test_the_latex_table_has_booktabs_rules_bold_best_and_marks_and_compiles(tmp_path):
    import shutil
    import subprocess

    from prompt_bench import latex

    for seed in (13, 21, 42):
        write_predicted_run(tmp_path, "dynamic_prompting (dp.position=off)", "sst2", seed, 0.9)
        write_predicted_run(tmp_path, "prompt_tuning", "sst2", seed, 0.7)
    table, analysis = analysed(tmp_path)
    tex = latex.table(table, analysis)
    lines = tex.splitlines()
    body = lines[lines.index(r"\toprule") + 1: lines.index(r"\bottomrule")]
    columns = lines[lines.index(r"\toprule") - 1].count("c") + 1  # \begin{tabular}{lcc}: l + one c per column
    rows = [line for line in body if line.endswith(r"\\")]
    assert all(row.count("&") == columns - 1 for row in rows) and len(rows) == 1 + 2 + 2  # header, baselines, methods
    assert r"\midrule" in body and r"dynamic\_prompting (dp.position=off)" in tex
    best_row = next(row for row in rows if row.startswith("dynamic"))
    worse_row = next(row for row in rows if row.startswith("prompt"))
    assert r"\textbf{" in best_row and r"$\pm$" in best_row and "$^{" not in best_row
    assert r"\textbf{" not in worse_row and r"$^{\downarrow\dagger}$" in worse_row  # below best, like majority
    assert tex.count("{") == tex.count("}")
    if shutil.which("pdflatex") is None:
        pytest.skip("no LaTeX engine here; checked structurally only")
    (tmp_path / "table.tex").write_text(tex)
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
                                        "\\input{table.tex}\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]


def test_the_report_writes_a_latex_table_and_a_plot_with_confidence_intervals(tmp_path):
    for seed in (13, 21):
        write_predicted_run(tmp_path, "bbt", "sst2", seed, 0.8)
        write_predicted_run(tmp_path, "manual", "sst2", seed, 0.6)
    main([str(tmp_path), "--wandb", "disabled", "--bootstrap", "200"])
    assert (tmp_path / "report.tex").read_text().count(r"\toprule") == 1
    png = tmp_path / "plots" / "sst2_test.png"
    assert png.is_file() and png.stat().st_size > 1000
    header = next(csv.reader((tmp_path / "report.csv").open()))
    assert {"ci_low", "ci_high", "p_vs_best_holm", "p_vs_majority_holm", "majority", "random"} <= set(header)


def test_the_tables_are_logged_to_wandb_as_tables_when_it_is_reachable(tmp_path, monkeypatch):
    import sys
    import types

    logged = {}

    class Run:
        def log(self, data):
            logged.update(data)

        def finish(self):
            logged["finished"] = True

    fake = types.SimpleNamespace(init=lambda **kw: logged.update(init=kw) or Run(), Settings=lambda **kw: None,
                                 Table=lambda columns, data: {"columns": columns, "data": data})
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for seed in (13, 21):
        write_predicted_run(tmp_path, "bbt", "sst2", seed, 0.8)
    main([str(tmp_path), "--wandb", "auto", "--bootstrap", "50"])  # WANDB_MODE=offline: not reachable
    assert not logged
    main([str(tmp_path), "--wandb", "offline", "--bootstrap", "50", "--compare", "bbt", "bbt"])
    assert logged["finished"] and logged["init"]["job_type"] == "report" and logged["init"]["mode"] == "offline"
    assert logged["report"]["columns"][:4] == ["method", "task", "metric", "mean"]
    assert [row[0] for row in logged["report"]["data"]] == ["bbt", "majority class", "uniform random"]
    assert None in logged["report"]["data"][1] and "compare" in logged


def test_a_corrupt_results_json_is_skipped_with_a_warning_naming_it(tmp_path, capsys):
    from prompt_bench.report import collect

    good = tmp_path / "sst2" / "bbt" / "m" / "seed13-a"
    good.mkdir(parents=True)
    (good / "results.json").write_text(json.dumps({"task": "sst2", "method": "bbt", "metric": "accuracy",
                                                   "test": {"accuracy": 0.6}, "seed": 13}))
    bad = tmp_path / "sst2" / "bbt" / "m" / "seed21-b"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text('{"task": "sst2", "meth')  # cut off mid-write
    runs = collect(tmp_path)
    assert [r["seed"] for r in runs] == [13]
    assert f"skipping {bad / 'results.json'}" in capsys.readouterr().err
