"""Run folders turn into a method x task table of mean ± std over seeds."""

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
