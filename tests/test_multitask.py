"""setting=multitask: one prompt trained on a mixture of tasks, evaluated on each."""

from __future__ import annotations

import pytest

from prompt_bench import experiment
from prompt_bench.settings import multitask
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
    # and it keeps each task's own predictions, in the task's own label indices
    from prompt_bench import predictions

    kept, single = predictions.load(tmp_path / "mixed"), predictions.load(tmp_path / "alone")
    assert set(kept["test"]) == {"sst2", "cb"} and set(kept["dev"]) == {"sst2+cb"}
    assert (kept["test"]["sst2"].preds == single["test"]["sst2"].preds).all() and kept["test"]["cb"].n_classes == 3
    assert predictions.scores(kept["test"]) == mixed["test"]


def test_each_row_is_prompted_by_the_shared_prompt_then_its_own_tasks(tiny_models):
    import torch

    from prompt_bench.batching import encode_split
    from prompt_bench.models import ModelSpec, build_backbone
    from prompt_bench.prompts.task_specific import task_prompt_logits
    from prompt_bench.tasks.spec import Example

    backbone = build_backbone(ModelSpec.from_config({"name": "t", "family": "masked_lm", "path": str(tiny_models["masked_lm"])}),
                              device="cpu")
    task = spec("a", ["bad", "great"])
    split = encode_split([Example({"s": s}, 0) for s in ["good film", "dull", "a mess", "fine"]], task, backbone, 5)
    split.tasks = [1, 0, 1, 0]
    batch = split.batch()
    torch.manual_seed(0)
    shared, own = torch.randn(3, backbone.hidden_size), torch.randn(2, 2, backbone.hidden_size)
    got = task_prompt_logits(backbone, batch, shared, own)
    for row, t in enumerate(split.tasks):
        alone = backbone.label_logits(split.batch([row]), torch.cat([shared, own[t]]).unsqueeze(0))[0, 0]
        torch.testing.assert_close(got[row], alone)
    assert not torch.allclose(got[0], task_prompt_logits(backbone, batch, shared, own.flip(0))[0])


def test_shared_plus_task_prompts_are_trained_and_saved_per_task(mirror, tmp_path):
    from prompt_bench.artifacts import load_tensors

    results = experiment.run(make(mirror, *MT, "setting.prompt=shared+task", "setting.task_tokens=2", "method=prompt_tuning",
                                  "method.n_prompt_tokens=3", "method.max_steps=2", "method.eval_every=2",
                                  "method.batch_size=4"), tmp_path / "run")
    tensors, _ = load_tensors(tmp_path / "run" / "prompt.safetensors")
    assert tensors["prompt"].shape[0] == 3 and tensors["task_prompts"].shape[:2] == (2, 2)
    assert {"sst2/accuracy", "cb/accuracy", "average"} <= set(results["test"])


def test_task_specific_prompts_are_refused_by_methods_that_train_one_prompt(mirror):
    with pytest.raises(ConfigError, match="use setting.prompt=shared"):
        experiment.plan(make(mirror, *MT, "setting.prompt=shared+task", "method=bbt"))
    with pytest.raises(ConfigError, match="setting.prompt"):
        experiment.plan(make(mirror, *MT, "setting.prompt=both"))
