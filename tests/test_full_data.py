"""setting=full_data: epochs, evaluation interval and early stopping for gradient methods; a budget over a
fixed train sample for black-box ones."""

from __future__ import annotations

import math

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from prompt_bench import experiment
from prompt_bench.settings import full_data
from prompt_bench.conf_files import CONF_DIR
from prompt_bench.tracking import read_metrics

FULL_CB = ["setting=full_data", "task=cb"]  # CB: 250 train examples, 10% of them held out as dev
def make(mirror, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        # compute.bf16=false: fp32 as test_experiment.make pins it (golden values are compared exactly)
        return compose(config_name="config", overrides=[f"data.mirror={mirror}", "logger=none", "run.progress=false",
                                                        "compute.bf16=false", *overrides])


PT = ["method=prompt_tuning", "method.n_prompt_tokens=2", "method.batch_size=32"]


def test_epochs_become_steps_over_the_train_split_and_eval_every_is_the_settings():
    setting = OmegaConf.create({"epochs": 3, "eval_every": 7})
    assert full_data.schedule(setting, {"max_steps": 300, "batch_size": 16, "eval_every": 25}, 100) == \
        {"max_steps": 21, "batch_size": 16, "eval_every": 7}
    untouched = OmegaConf.create({"epochs": None, "eval_every": None})
    assert full_data.schedule(untouched, {"max_steps": 300, "batch_size": 16, "eval_every": 25}, 100)["max_steps"] == 300
    assert full_data.schedule(setting, {"budget": 10}, 100) == {"budget": 10}  # methods that count no steps


def test_a_gradient_method_trains_for_the_asked_epochs(mirror, tmp_path):
    results = experiment.run(make(mirror, *FULL_CB, *PT, "setting.epochs=1", "setting.eval_every=4"), tmp_path / "run")
    steps = math.ceil(results["n_train"] / 32)
    assert results["budget_used"] == steps and results["n_train"] == 225
    dev_steps = [r["step"] for r in read_metrics(tmp_path / "run") if "dev/accuracy" in r]
    assert dev_steps == [0, 4, steps]


def test_training_stops_after_patience_evaluations_without_a_better_dev_score(mirror, tmp_path):
    # lr 0: dev can never improve on the first evaluation
    results = experiment.run(make(mirror, *FULL_CB, *PT, "method.lr=0", "method.max_steps=50",
                                  "setting.eval_every=1", "setting.patience=2"), tmp_path / "run")
    assert results["budget_used"] == 2 and results["method_info"]["stopped_early"] is True


def test_black_box_calls_score_a_fixed_seeded_sample_of_the_train_split(mirror, tmp_path):
    bbt = ["method=bbt", "method.budget=20", "method.eval_every=20", "method.intrinsic_dim=8",
           "method.n_prompt_tokens=2", "optimizer.popsize=10", "setting.black_box_train=24"]
    results = experiment.run(make(mirror, *FULL_CB, *bbt), tmp_path / "run")
    assert results["n_train"] == 24 and results["budget_used"] == 20
    examples = list(range(100))
    sample = full_data.black_box_sample(OmegaConf.create({"black_box_train": 24}), examples, seed=13)
    assert sample == sorted(sample) and len(set(sample)) == 24
    assert sample == full_data.black_box_sample(OmegaConf.create({"black_box_train": 24}), examples, seed=13)
    assert sample != full_data.black_box_sample(OmegaConf.create({"black_box_train": 24}), examples, seed=21)


@pytest.mark.parametrize("key", ["epochs", "eval_every", "patience", "black_box_train"])
def test_each_knob_refuses_zero_by_name(key):
    from prompt_bench.errors import ConfigError

    with pytest.raises(ConfigError, match=f"setting.{key}"):
        full_data.check(OmegaConf.create({key: 0}))
