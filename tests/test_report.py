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
