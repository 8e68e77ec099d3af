"""Whole runs on real data (the shared mirror) with the packaged MiniLM and tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from prompt_bench import experiment
from prompt_bench.artifacts import load_tensors
from prompt_bench.cli import CONF_DIR  # noqa: F401 - registers the pb_hash resolver
from prompt_bench.tracking import Tracker, read_metrics

# compute.bf16=false: these runs are compared exactly (golden values written in fp32, fp32 backbones built beside
# them); the default, auto, would run bf16 on a CPU with AVX512-BF16/AMX. tests/test_precision.py covers auto.
FAST = ["setting.k=4", "logger=none", "run.progress=false", "compute.bf16=false"]
SMALL_BBT = ["method=bbt", "method.budget=60", "method.intrinsic_dim=20", "method.n_prompt_tokens=4",
             "optimizer.popsize=10", "method.eval_every=20"]


def make(mirror, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        # few-shot k=4 unless a test chooses its setting (cb and boolq would otherwise run their own, FewGLUE)
        chosen = any(o.startswith("setting=") for o in overrides)
        return compose(config_name="config", overrides=[f"data.mirror={mirror}", *([] if chosen else ["setting=few_shot"]),
                                                        *FAST, *overrides])


def run_interrupted_then_resumed(run, folder, at):
    """`run(folder)` killed when about to log training step `at`, then run again: the resumed results."""
    with pytest.MonkeyPatch.context() as patch:
        interrupt_at(patch, at)
        with pytest.raises(KeyboardInterrupt):
            run(folder)
    return run(folder)


def interrupt_at(monkeypatch, at):
    """Make the run die (as a kill would) when it is about to log training step `at`."""
    original = Tracker.log

    def log(self, record, step):
        if step == at and "train/loss" in record:
            raise KeyboardInterrupt
        return original(self, record, step)

    monkeypatch.setattr(Tracker, "log", log)


def test_manual_prompt_runs_end_to_end_and_writes_a_complete_run_folder(mirror, tmp_path):
    results = experiment.run(make(mirror, "method=manual", "task=sst2"), tmp_path / "run")
    folder = tmp_path / "run"
    assert {"config.yaml", "results.json", "metrics.jsonl"} <= {p.name for p in folder.iterdir()}
    saved = json.loads((folder / "results.json").read_text())
    assert saved["test"]["accuracy"] == results["test"]["accuracy"]
    assert saved["n_train"] == 8 and saved["n_dev"] == 8 and saved["n_test"] == 872
    assert 0.5 < saved["test"]["accuracy"] <= 1.0  # MiniLM's zero-shot SST-2 is above chance
    assert {"wall_time_s", "peak_memory_mb", "versions", "budget_used"} <= set(saved)


def test_a_finished_run_folder_is_never_rewritten(mirror, tmp_path):
    cfg = make(mirror, "method=manual", "task=rte")
    first = experiment.run(cfg, tmp_path / "run")
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    again = experiment.run(cfg, tmp_path / "run")
    assert again == json.loads(json.dumps(first))
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}


def test_bbt_spends_exactly_its_budget_and_saves_its_prompt(mirror, tmp_path):
    results = experiment.run(make(mirror, *SMALL_BBT, "task=sst2"), tmp_path / "run")
    assert results["budget_used"] == 60 and results["budget_unit"] == "api_calls"
    tensors, meta = load_tensors(tmp_path / "run" / "prompt.safetensors")
    assert tensors["prompt"].shape == (4, 384) and tensors["z"].shape == (20,)
    assert meta["method"] == "bbt" and meta["hidden_size"] == 384
    steps = [r["step"] for r in read_metrics(tmp_path / "run") if "train/loss" in r]
    assert steps == [10, 20, 30, 40, 50, 60]  # metrics are keyed by API calls


def test_an_interrupted_bbt_run_resumes_to_the_uninterrupted_result(mirror, tmp_path, monkeypatch):
    cfg = make(mirror, *SMALL_BBT, "task=sst2")
    reference = experiment.run(cfg, tmp_path / "reference")
    interrupt_at(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()
    before = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["wall_time_s"]
    monkeypatch.undo()
    resumed = experiment.run(cfg, tmp_path / "run")
    assert resumed["test"] == reference["test"] and resumed["budget_used"] == 60
    assert resumed["wall_time_s"] >= before > 0
    ref_prompt, _ = load_tensors(tmp_path / "reference" / "prompt.safetensors")
    new_prompt, _ = load_tensors(tmp_path / "run" / "prompt.safetensors")
    torch.testing.assert_close(ref_prompt["prompt"], new_prompt["prompt"], rtol=0, atol=0)
    assert read_metrics(tmp_path / "run") == read_metrics(tmp_path / "reference")


def test_an_interrupted_run_can_be_restarted_cleanly_instead(mirror, tmp_path, monkeypatch):
    cfg = make(mirror, *SMALL_BBT, "task=sst2")
    interrupt_at(monkeypatch, 30)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg, tmp_path / "run")
    monkeypatch.undo()
    restarted = experiment.run(make(mirror, *SMALL_BBT, "task=sst2", "run.restart=true"), tmp_path / "run")
    assert restarted["budget_used"] == 60
    assert len(list(tmp_path.glob("run.interrupted-*"))) == 1


def test_prompt_tuning_trains_resumes_and_keeps_the_best_dev_prompt(mirror, tmp_path, monkeypatch):
    overrides = ["method=prompt_tuning", "task=sst2", "method.n_prompt_tokens=4", "method.max_steps=10",
                 "method.eval_every=5", "method.batch_size=4"]
    reference = experiment.run(make(mirror, *overrides), tmp_path / "reference")
    assert reference["budget_used"] == 10 and reference["budget_unit"] == "steps"
    dev_scores = [r["dev/accuracy"] for r in read_metrics(tmp_path / "reference") if "dev/accuracy" in r]
    assert reference["method_info"]["best_dev"] == max(dev_scores)
    interrupt_at(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(make(mirror, *overrides), tmp_path / "run")
    monkeypatch.undo()
    resumed = experiment.run(make(mirror, *overrides), tmp_path / "run")
    assert resumed["test"] == reference["test"]
    a, _ = load_tensors(tmp_path / "reference" / "prompt.safetensors")
    b, _ = load_tensors(tmp_path / "run" / "prompt.safetensors")
    torch.testing.assert_close(a["prompt"], b["prompt"], rtol=0, atol=0)


def test_prompt_tuning_can_start_from_a_saved_prompt(mirror, tmp_path):
    first = ["method=bbt", "method.budget=20", "method.intrinsic_dim=10", "method.n_prompt_tokens=4",
             "optimizer.popsize=10", "method.eval_every=20", "task=sst2"]
    experiment.run(make(mirror, *first), tmp_path / "bbt")
    prompt_file = tmp_path / "bbt" / "prompt.safetensors"
    results = experiment.run(
        make(mirror, "method=prompt_tuning", "task=sst2", "method.n_prompt_tokens=4", "method.max_steps=2",
             "method.eval_every=1", "method.batch_size=4", f"method.init={prompt_file}"), tmp_path / "pt")
    assert results["method_info"]["init"] == str(prompt_file)


@pytest.mark.parametrize("family", ["masked_lm", "causal_lm", "seq2seq"])
def test_fine_tuning_and_bbt_run_on_every_model_family(mirror, tmp_path, tiny_models, family):
    model = ["model=local", f"model.path={tiny_models[family]}", f"model.family={family}", "task=rte"]
    tuned = experiment.run(make(mirror, *model, "method=fine_tuning", "method.max_steps=2", "method.eval_every=1",
                                "method.batch_size=4", "method.save_model=true"), tmp_path / "ft")
    assert tuned["budget_used"] == 2
    assert (tmp_path / "ft" / "model" / "model.safetensors").is_file()
    # the prompt added onto placeholder words (BBT's default; the tiny GPT-2 has ~400 words) and inserted
    start = 100 if family == "causal_lm" else 1000
    for mode in ("add", "insert"):
        bbt = experiment.run(make(mirror, *model, *SMALL_BBT[:-1], "method.eval_every=30", "method.budget=20",
                                  f"method.prompt_mode={mode}", f"method.placeholder_start={start}"), tmp_path / mode)
        assert bbt["budget_used"] == 20
        assert json.loads((tmp_path / mode / "prompt.json").read_text())["prompt_mode"] == mode


@pytest.mark.parametrize("optimizer", ["random_search", "de"])
def test_bbt_runs_with_any_derivative_free_optimizer(mirror, tmp_path, optimizer):
    overrides = [*SMALL_BBT, "task=sst2", "method.budget=20", f"optimizer={optimizer}", "optimizer.popsize=10"]
    results = experiment.run(make(mirror, *overrides), tmp_path / "run")
    assert results["budget_used"] == 20
    assert json.loads((tmp_path / "run" / "results.json").read_text())["budget_used"] == 20


def test_a_run_folder_being_run_by_another_process_is_refused(mirror, tmp_path):
    from filelock import FileLock

    from prompt_bench.errors import RunBusy

    cfg = make(mirror, "method=manual", "task=sst2")
    with FileLock(str(tmp_path / "run") + ".lock"):
        with pytest.raises(RunBusy, match="another process"):
            experiment.run(cfg, tmp_path / "run")
    assert experiment.run(cfg, tmp_path / "run")["method"] == "manual"


@pytest.mark.parametrize("method", ["bbt", "prompt_tuning"])
def test_tracking_test_gives_a_curve_that_ends_at_the_reported_test_score(mirror, tmp_path, method):
    overrides = SMALL_BBT if method == "bbt" else [
        "method=prompt_tuning", "method.n_prompt_tokens=4", "method.max_steps=6", "method.eval_every=2",
        "method.batch_size=4"]
    results = experiment.run(make(mirror, *overrides, "task=sst2", "run.track_test=true"), tmp_path / "run")
    curve = [r for r in read_metrics(tmp_path / "run") if "test/accuracy" in r and "dev/accuracy" in r]
    assert len(curve) >= 3
    assert curve[-1]["test/accuracy"] == results["test"]["accuracy"]


def test_a_resumed_run_reports_the_wall_time_of_every_segment_up_to_its_last_checkpoint(tmp_path, monkeypatch):
    from prompt_bench import checkpoint as checkpoint_module

    clock = iter([100.0, 130.0, 500.0, 510.0])
    monkeypatch.setattr(checkpoint_module.time, "perf_counter", lambda: next(clock))
    first = checkpoint_module.Checkpoint(tmp_path)  # clock 100
    first.save({"z": torch.zeros(2)}, {"calls": 40})  # clock 130: 30 s into the run, then the process dies
    second = checkpoint_module.Checkpoint(tmp_path)  # clock 500: the resumed segment starts
    assert second.earlier_s == 30.0
    assert second.wall_time_s() == 40.0  # clock 510: 30 s before the kill plus 10 s after it
