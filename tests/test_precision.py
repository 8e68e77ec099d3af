"""compute.bf16=true|false|auto: which precision a run gets, and that the run records it."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from prompt_bench import config_schema, experiment, models, predictions
from prompt_bench.cli import CONF_DIR  # noqa: F401 - registers the pb_hash resolver
from prompt_bench.config_values import bf16_mode
from prompt_bench.errors import ConfigError
from prompt_bench.models import ModelSpec, build_backbone, loading
from prompt_bench.predict import main as predict_main
from prompt_bench.summary import print_summary
from prompt_bench.tasks import loading as data_loading

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def compose_run(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("spelling", ["auto", "AUTO", " Auto "])
def test_auto_is_a_value_of_its_own_beside_the_yes_no_spellings(spelling):
    assert bf16_mode("compute.bf16", spelling) == "auto"
    assert bf16_mode("compute.bf16", "on") is True and bf16_mode("compute.bf16", False) is False


def test_auto_runs_fp32_on_a_cpu_without_native_bf16_and_bf16_on_one_with_it(monkeypatch):
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: False)
    assert loading.pick_dtype(CPU, "auto") == torch.float32
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: True)
    assert loading.pick_dtype(CPU, "auto") == torch.bfloat16


def test_auto_runs_bf16_on_a_gpu_with_native_bf16_and_fp32_on_an_older_one(monkeypatch):
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: True)  # the CPU's instructions do not decide for a GPU
    monkeypatch.setattr(loading, "cuda_has_bf16", lambda device: True)
    assert loading.pick_dtype(CUDA, "auto") == torch.bfloat16
    monkeypatch.setattr(loading, "cuda_has_bf16", lambda device: False)
    assert loading.pick_dtype(CUDA, "auto") == torch.float32
    assert loading.pick_dtype(torch.device("mps"), "auto") == torch.float32


def test_true_on_a_cpu_without_native_bf16_is_still_refused_while_auto_falls_back(monkeypatch):
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match=r"compute.bf16=true needs a CUDA device or a CPU with bf16 instructions"):
        loading.pick_dtype(CPU, True)
    assert loading.pick_dtype(CPU, "auto") == torch.float32
    assert loading.pick_dtype(CPU, "false") == torch.float32


def test_the_schema_accepts_auto_and_refuses_maybe_with_the_three_choices():
    config_schema.check(compose_run("compute.bf16=auto"))
    config_schema.check(compose_run("compute.bf16=false"))
    with pytest.raises(ConfigError) as refused:
        config_schema.check(compose_run("compute.bf16=maybe"))
    message = str(refused.value)
    assert message.startswith("compute.bf16=maybe is not a yes/no value")
    assert "compute.bf16=true or compute.bf16=false" in message and "compute.bf16=auto" in message


def test_the_default_is_auto():
    # scripts/bench_dfo.py --rank: fp32 and bf16 rank a MiniLM generation's candidates alike (docs/benchmarks.md)
    assert compose_run().compute.bf16 == "auto"


def test_the_backbone_reports_the_precision_auto_chose(tiny_models, monkeypatch):
    spec = ModelSpec.from_config({"name": "t", "family": "masked_lm", "path": str(tiny_models["masked_lm"])})
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: False)
    assert build_backbone(spec, device="cpu", bf16="auto").precision == "fp32"
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: True)
    backbone = build_backbone(spec, device="cpu", bf16="auto")
    assert backbone.precision == "bf16" and backbone.model.get_input_embeddings().weight.dtype == torch.bfloat16


@pytest.mark.parametrize("native, expected", [(False, "fp32"), (True, "bf16")])
def test_results_json_and_the_summary_say_which_precision_ran(mirror, tiny_models, tmp_path, monkeypatch, capsys,
                                                              native, expected):
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: native)
    cfg = compose_run(f"data.mirror={mirror}", "method=manual", "task=sst2", "setting.k=4", "logger=none",
                      "run.progress=false", "compute.device=cpu", "compute.bf16=auto", "model=local",
                      f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm")
    results = experiment.run(cfg, tmp_path / "run")
    assert results["precision"] == expected
    assert json.loads((tmp_path / "run" / "results.json").read_text())["precision"] == expected
    capsys.readouterr()
    print_summary(results, tmp_path / "run")
    assert f"on cpu, {expected}" in capsys.readouterr().out


@pytest.mark.parametrize("native, expected", [(False, "fp32"), (True, "bf16")])
def test_predict_scores_new_inputs_in_the_precision_the_run_ran_in(mirror, tiny_models, tmp_path, monkeypatch,
                                                                   native, expected):
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: native)
    cfg = compose_run(f"data.mirror={mirror}", "method=manual", "task=sst2", "setting.k=4", "logger=none",
                      "run.progress=false", "compute.device=cpu", "model=local",
                      f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm")  # compute.bf16: the default
    run = tmp_path / "run"
    experiment.run(cfg, run)
    built = []
    original = models.build_backbone
    monkeypatch.setattr(models, "build_backbone", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    task = experiment.plan(cfg).task
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps(dict(ex.fields)) + "\n"
                              for ex in data_loading.load_split(task, "test", mirror).examples[:40]))
    predict_main([str(run), str(inputs), "--out", str(tmp_path / "out.jsonl"), "--device", "cpu"])
    assert [b.precision for b in built] == [expected]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    saved = predictions.load(run)["test"][task.name].preds[:40]
    assert [row["prediction"] for row in rows] == [task.labels[i] for i in saved]
