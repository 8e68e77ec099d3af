"""setting=fewglue: FewGLUE/PET-sized runs, 32 training examples in total plus a dev set of the same size."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from prompt_bench.cli import CONF_DIR  # noqa: F401 - registers the pb_hash resolver
from prompt_bench.errors import ConfigError, DataError
from prompt_bench.experiment import load_data, plan
from prompt_bench.tasks.loading import load_dev_pool, load_split
from prompt_bench.tasks.sampling import fixed_total
from prompt_bench.tasks.spec import Example, TaskSpec

SUPERGLUE = ["boolq", "cb", "copa", "superglue_rte", "wic", "wsc", "multirc"]


def make(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def fewglue(mirror, task, *overrides):
    cfg = make("setting=fewglue", f"task={task}", f"data.mirror={mirror}", *overrides)
    return load_data(cfg, plan(cfg).task)


def key(ex):
    return tuple(ex.fields.values()), ex.label, ex.group


def ids(examples):
    return {id(ex) for ex in examples}


def pool(counts):
    """Synthetic examples with counts[c] of class c, each text unique."""
    return [Example({"s": f"{c}-{i}"}, c) for c, n in enumerate(counts) for i in range(n)]


# --- the setting --------------------------------------------------------------------------------


def test_fewglue_is_32_training_examples_in_total_and_a_dev_set_of_the_same_size():
    setting = make("setting=fewglue").setting
    assert (setting.name, setting.n_train, setting.n_dev) == ("fewglue", 32, 32)


@pytest.mark.parametrize("task", SUPERGLUE)
def test_every_superglue_task_gets_exactly_32_train_and_32_dev_examples_disjoint_from_each_other_and_test(mirror, task):
    data = fewglue(mirror, task)
    assert (len(data.train), len(data.dev)) == (32, 32)
    assert not ids(data.train) & ids(data.dev) and not ids(data.train) & ids(data.test) and not ids(data.dev) & ids(data.test)
    assert not {key(ex) for ex in data.dev} & {key(ex) for ex in data.test}


def test_the_draw_is_deterministic_per_seed_and_differs_across_seeds(mirror):
    a, b, c = (fewglue(mirror, "cb", f"seed={s}") for s in (13, 13, 21))
    assert [key(ex) for ex in a.train] == [key(ex) for ex in b.train] and [key(ex) for ex in a.dev] == [key(ex) for ex in b.dev]
    assert {key(ex) for ex in a.train} != {key(ex) for ex in c.train}
    assert {key(ex) for ex in a.dev} != {key(ex) for ex in c.dev}


def test_classes_appear_in_train_and_dev_in_proportion_to_the_pool(mirror):
    # CB train is 115 / 119 / 16: 32 * share = 14.72 / 15.23 / 2.05 -> 14 / 15 / 2 plus the one left over
    # to the largest remainder (class 0).
    data = fewglue(mirror, "cb")
    assert Counter(ex.label for ex in data.train) == Counter(ex.label for ex in data.dev) == {0: 15, 1: 15, 2: 2}


def test_largest_remainder_rounding_and_at_least_one_example_per_class():
    # 60 / 30 / 10 of 100 -> 6 / 3 / 1 of 10, exactly.
    train, dev = fixed_total(pool([60, 30, 10]), 10, 10, seed=0, num_classes=3)
    assert Counter(ex.label for ex in train) == Counter(ex.label for ex in dev) == {0: 6, 1: 3, 2: 1}
    # 97 / 2 / 1 of 100 -> 31.04 / 0.64 / 0.32 of 32: rounding gives 31 / 1 / 0, and the rare class takes
    # its one train example from the class rounding favoured most.
    train, dev = fixed_total(pool([97, 2, 1]), 32, 32, seed=0, num_classes=3)
    assert Counter(ex.label for ex in train) == {0: 30, 1: 1, 2: 1}
    assert Counter(ex.label for ex in dev) == {0: 31, 1: 1}  # the only class-2 example is in train
    assert not {ex.fields["s"] for ex in train} & {ex.fields["s"] for ex in dev}


def test_a_pool_exactly_the_size_of_train_plus_dev_is_used_up():
    examples = pool([40, 24])
    train, dev = fixed_total(examples, 32, 32, seed=5, num_classes=2)
    assert sorted(ex.fields["s"] for ex in train + dev) == sorted(ex.fields["s"] for ex in examples)


def test_a_pool_smaller_than_train_plus_dev_is_a_data_error_naming_the_numbers_and_the_fix():
    with pytest.raises(
        DataError,
        match=r"n_train=32 \+ n_dev=32 = 64 examples are needed but the pool has only 50: "
        r"lower setting.n_train / setting.n_dev \(to 50 in all\) or use setting=few_shot",
    ):
        fixed_total(pool([25, 25]), 32, 32, seed=0, num_classes=2)


def test_the_run_names_the_task_when_its_train_split_is_too_small(mirror):
    with pytest.raises(DataError, match=r"task cb: n_train=240 \+ n_dev=32 = 272 .* only 250: .*setting=few_shot"):
        fewglue(mirror, "cb", "setting.n_train=240")


# --- BoolQ: the FewGLUE 32 and a dev pool held out of test ----------------------------------------


def test_boolq_trains_on_exactly_the_fewglue_32_and_takes_dev_from_a_pool_held_out_of_test(mirror):
    data = fewglue(mirror, "boolq", "seed=13")
    rows = [json.loads(line) for line in (mirror / "superglue/BoolQ/train_fewglue32.jsonl").read_text().splitlines()]
    fewglue_32 = sorted((r["passage"], r["question"], int(r["label"])) for r in rows)
    assert sorted((ex.fields["passage"], ex.fields["question"], ex.label) for ex in data.train) == fewglue_32

    spec = plan(make("task=boolq")).task
    dev_pool = load_dev_pool(spec, mirror).examples
    test = load_split(spec, "test", mirror).examples
    assert (len(dev_pool), len(test)) == (320, 2950)  # 3,270 official validation examples in all
    assert not {key(ex) for ex in dev_pool} & {key(ex) for ex in test}
    assert {key(ex) for ex in data.dev} <= {key(ex) for ex in dev_pool}
    assert [key(ex) for ex in data.test] == [key(ex) for ex in test]
    assert "FewGLUE" in data.notes[0] and "dev pool" in data.notes[0]
    assert data.sources["dev"] == data.sources["test"]

    # The pool is fixed; which 32 of it are dev depends on the seed.
    other = fewglue(mirror, "boolq", "seed=21")
    assert [key(ex) for ex in load_dev_pool(spec, mirror).examples] == [key(ex) for ex in dev_pool]
    assert {key(ex) for ex in other.train} == {key(ex) for ex in data.train}
    assert {key(ex) for ex in other.dev} != {key(ex) for ex in data.dev}


def test_boolq_few_shot_still_samples_train_and_dev_from_the_32_with_k_at_most_7(mirror):
    cfg = make("task=boolq", "setting=few_shot", "setting.k=7", f"data.mirror={mirror}")
    data = load_data(cfg, plan(cfg).task)
    assert (len(data.train), len(data.dev), len(data.test)) == (14, 14, 2950)
    fewglue_32 = {key(ex) for ex in load_split(plan(cfg).task, "train", mirror).examples}
    assert {key(ex) for ex in data.train + data.dev} <= fewglue_32
    cfg = make("task=boolq", "setting=few_shot", "setting.k=8", f"data.mirror={mirror}")
    with pytest.raises(DataError, match="lower setting.k to 7"):
        load_data(cfg, plan(cfg).task)


def test_only_dev_from_test_tasks_on_the_mirror_have_a_dev_pool(mirror):
    assert load_dev_pool(plan(make("task=cb")).task, mirror) is None
    assert load_dev_pool(plan(make("task=boolq")).task, None) is None  # the hub has the full train split


def test_dev_from_test_refuses_a_train_file_that_is_the_test_file(tmp_path):
    (tmp_path / "all.jsonl").write_text("".join(json.dumps({"text": str(i), "label": i % 2 == 0}) + "\n" for i in range(10)))
    spec = TaskSpec.from_config(OmegaConf.create({
        "name": "tiny", "benchmark": "test", "labels": ["False", "True"], "verbalizer": ["No", "Yes"],
        "template": "{text} {mask} .", "metric": "accuracy",
        "mirror": {"format": "superglue_jsonl", "dir": ".", "files": {"train": "all.jsonl", "test": "all.jsonl"},
                   "fields": {"text": "text"}, "substitute": {"kind": "dev_from_test", "pool_size": 4}},
        "hub": {"path": "tiny", "splits": {"train": "train", "test": "test"}, "fields": {"text": "text"}},
    }))
    with pytest.raises(ConfigError, match="dev_from_test .* mirror.files.train must name another file"):
        load_dev_pool(spec, tmp_path)


# --- checks before anything is loaded ---------------------------------------------------------------


def test_an_unknown_setting_name_is_a_config_error_listing_the_settings():
    with pytest.raises(ConfigError, match="unknown setting 'fewshot': use setting=few_shot, setting=fewglue, setting=full_data"):
        plan(make("setting.name=fewshot"))


@pytest.mark.parametrize("override", ["setting.n_train=0", "setting.n_dev=-1"])
def test_fewglue_refuses_non_positive_sizes(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        plan(make("setting=fewglue", override))


def test_black_box_methods_accept_the_32_example_train_set():
    assert plan(make("method=bbt", "setting=fewglue", "task=cb")).task.name == "cb"
