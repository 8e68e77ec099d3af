"""setting=multitask: one prompt trained on a mixture of tasks, evaluated on each."""

from __future__ import annotations

import pytest

from prompt_bench import experiment, multitask
from prompt_bench.errors import ConfigError
from prompt_bench.tasks.spec import TaskSpec

from test_experiment import make

MT = ["setting=multitask", "setting.tasks=[sst2,cb]", "setting.k=2"]


def spec(name, words):
    return TaskSpec.from_config({
        "name": name, "benchmark": "t", "labels": [str(i) for i in range(len(words))], "verbalizer": list(words),
        "template": "{s} {mask}", "metric": "accuracy",
        "mirror": {"format": "glue_tsv", "dir": "x", "files": {}, "fields": {"s": "s"}},
        "hub": {"path": "x", "name": None, "splits": {}, "fields": {"s": "s"}},
    })


def test_label_words_are_pooled_and_a_shared_word_is_one_class():
    union, index = multitask.union_task([spec("a", ["bad", "great"]), spec("b", ["No", "Yes", "Maybe", "great"])])
    assert union.verbalizer == ("bad", "great", "No", "Yes", "Maybe") and index == [[0, 1], [2, 3, 4, 1]]
    assert union.name == "a+b"


def test_mixing_rates_repeat_small_tasks_as_asked():
    assert multitask.repeats([32, 8], "proportional", 1.0) == [1, 1]
    assert multitask.repeats([32, 8], "uniform", 1.0) == [1, 4]
    assert multitask.repeats([32, 8], "temperature", 2.0) == [1, 2]  # shares 32^.5 : 8^.5 = 2 : 1


def test_a_prompt_trained_on_the_mixture_is_scored_on_every_task(mirror, tmp_path):
    results = experiment.run(make(mirror, *MT, "method=prompt_tuning", "method.n_prompt_tokens=3",
                                  "method.max_steps=2", "method.eval_every=2", "method.batch_size=4"), tmp_path / "run")
    assert results["task"] == "sst2+cb" and results["metric"] == "average"
    test = results["test"]
    assert {"sst2/accuracy", "cb/accuracy", "cb/macro_f1"} <= set(test)
    assert test["average"] == pytest.approx((test["sst2/accuracy"] + test["cb/macro_f1"]) / 2)
    assert results["n_train"] == 2 * 2 + 2 * 3 and results["tasks"]["cb"]["train"] == 6


def test_a_black_box_candidate_is_one_call_over_every_tasks_examples(mirror, tmp_path):
    results = experiment.run(make(mirror, *MT, "method=bbt", "method.budget=20", "method.eval_every=20",
                                  "method.intrinsic_dim=8", "method.n_prompt_tokens=3", "optimizer.popsize=10"),
                             tmp_path / "run")
    assert results["budget_used"] == 20 and "sst2/accuracy" in results["test"] and "cb/accuracy" in results["test"]


def test_bad_multitask_settings_name_the_fix(mirror):
    with pytest.raises(ConfigError, match="at least two tasks"):
        experiment.plan(make(mirror, "setting=multitask", "setting.tasks=[sst2]"))
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        experiment.plan(make(mirror, "setting=multitask", "setting.tasks=[sst2,nope]"))
    with pytest.raises(ConfigError, match="setting.mixing"):
        experiment.plan(make(mirror, *MT, "setting.mixing=random"))


def test_each_task_in_the_mixture_predicts_as_it_would_alone(mirror, tmp_path):
    mixed = experiment.run(make(mirror, *MT, "method=manual"), tmp_path / "mixed")
    alone = experiment.run(make(mirror, "method=manual", "task=sst2", "setting.k=2"), tmp_path / "alone")
    assert mixed["test"]["sst2/accuracy"] == alone["test"]["accuracy"]
