"""One small run per method (and per setting) gives exactly the results.json it gave before: the check a refactor must pass.

The expected values live in tests/golden/<method>.json. They were written by this test itself
(`PROMPT_BENCH_WRITE_GOLDEN=1 pytest tests/test_golden_runs.py`) before a refactor; change them only for a
change that is meant to change results, and say so in the commit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from prompt_bench import experiment
from test_experiment import SMALL_BBT, make
from test_full_data import make as make_without_k

GOLDEN = Path(__file__).parent / "golden"
STEPS = ["method.max_steps=3", "method.eval_every=1", "method.batch_size=4"]
PROMPT = ["method.n_prompt_tokens=3", *STEPS]
BLACK_BOX = ["method.budget=40", "method.intrinsic_dim=8", "method.n_prompt_tokens=3", "optimizer.popsize=4",
             "method.eval_every=20"]


def runs(tiny_models, tmp_path):
    masked = ["model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm"]
    return {
        "manual": [*masked, "method=manual"],
        "prompt_tuning": [*masked, "method=prompt_tuning", *PROMPT],
        "p_tuning_v2": [*masked, "method=p_tuning_v2", *PROMPT],
        "dynamic_prompting": [*masked, "method=dynamic_prompting", *PROMPT, "method.pool_size=2"],
        "fine_tuning": [*masked, "method=fine_tuning", *STEPS],
        "metapt": [*masked, "method=metapt", *PROMPT, "method.pretrain.meta_steps=2", "method.pretrain.corpus.max_texts=40",
                   "method.pretrain.k=2", "method.pretrain.batch_size=4", f"run.root={tmp_path}"],
        "ppt": [*masked, "method=ppt", *PROMPT, "method.pretrain.meta_steps=2", "method.pretrain.corpus.max_texts=40",
                "method.pretrain.batch_size=4", f"run.root={tmp_path}"],
        "bbt": [*masked, *SMALL_BBT],
        "bbtv2": [*masked, "method=bbtv2", *BLACK_BOX],
        "clip_tuning": [*masked, "method=clip_tuning", *BLACK_BOX, "method.n_networks=2"],
        "gdfo": [*masked, "method=gdfo", *BLACK_BOX, f"method.gdfo.student={tiny_models['causal_lm']}",
                 "method.gdfo.student_family=causal_lm", "method.placeholder_start=200"],
        # every setting once, gradient and black-box, so a change to how settings split and score data shows
        "fewglue": [*masked, "task=cb", "setting=fewglue", "setting.n_train=8", "setting.n_dev=8",
                    "method=prompt_tuning", *PROMPT],
        "full_data_gradient": [*masked, "task=cb", "setting=full_data", "setting.epochs=1", "setting.eval_every=20",
                               "setting.patience=1", "method=prompt_tuning", "method.n_prompt_tokens=3",
                               "method.batch_size=16"],
        "full_data_black_box": [*masked, "task=cb", "setting=full_data", "setting.black_box_train=24", *SMALL_BBT],
        "multitask": [*masked, "setting=multitask", "setting.tasks=[sst2,cb]", "setting.k=2", "method=prompt_tuning",
                      *PROMPT],
        "multitask_task_prompts": [*masked, "setting=multitask", "setting.tasks=[sst2,cb]", "setting.k=2",
                                   "setting.prompt=shared+task", "setting.task_tokens=2", "method=prompt_tuning", *PROMPT],
        "multitask_black_box": [*masked, "setting=multitask", "setting.tasks=[sst2,cb]", "setting.k=2", *SMALL_BBT],
    }


def essentials(results: dict, folder: Path) -> dict:
    """The scores, and what would move before they do on near-constant tiny models: every logged training
    loss and each saved tensor's sum and norm."""
    from prompt_bench.artifacts import load_tensors
    from prompt_bench.tracking import read_metrics

    out = {key: results[key] for key in ("test", "dev", "budget_used", "n_train", "n_dev", "n_test")}
    out["losses"] = [r["train/loss"] for r in read_metrics(folder) if "train/loss" in r]
    if (folder / "prompt.safetensors").is_file():
        tensors = load_tensors(folder / "prompt.safetensors")[0]
        out["tensors"] = {k: [float(v.double().sum()), float(v.double().norm())] for k, v in sorted(tensors.items())}
    return out


@pytest.mark.parametrize("method", ["manual", "prompt_tuning", "p_tuning_v2", "dynamic_prompting", "fine_tuning", "metapt",
                                    "ppt", "bbt", "bbtv2", "clip_tuning", "gdfo", "fewglue", "full_data_gradient",
                                    "full_data_black_box", "multitask", "multitask_task_prompts", "multitask_black_box"])
def test_a_small_run_of_each_method_and_setting_gives_the_results_it_gave_before(mirror, tiny_models, tmp_path, method):
    folder = tmp_path / "run"
    overrides = runs(tiny_models, tmp_path)[method]
    # few-shot k is only a key of the few-shot settings
    compose = make_without_k if {"setting=fewglue", "setting=full_data"} & set(overrides) else make
    results = essentials(experiment.run(compose(mirror, *overrides), folder), folder)
    golden = GOLDEN / f"{method}.json"
    if os.environ.get("PROMPT_BENCH_WRITE_GOLDEN") == "1":
        golden.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    expected = json.loads(golden.read_text())
    assert results["budget_used"] == expected["budget_used"] and results["n_train"] == expected["n_train"]
    for split in ("test", "dev"):
        assert results[split] == pytest.approx(expected[split], abs=1e-9), split
    assert results["losses"] == pytest.approx(expected["losses"], rel=1e-5, abs=1e-7)
    assert results.get("tensors", {}).keys() == expected.get("tensors", {}).keys()
    for key, values in results.get("tensors", {}).items():
        assert values == pytest.approx(expected["tensors"][key], rel=1e-5, abs=1e-6), key
