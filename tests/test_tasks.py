"""Tasks: YAML specs, loading from the local mirror (and the hub path's mapping), sampling, metrics."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prompt_bench.errors import DataError
from prompt_bench.tasks import metrics
from prompt_bench.tasks.loading import load_split, mirror_root
from prompt_bench.tasks.sampling import few_shot, full_data
from prompt_bench.tasks.spec import Example, TaskSpec

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = REPO / "conf" / "task"
MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"
TASK_FILES = sorted(TASK_DIR.glob("*.yaml"))

# Split sizes and class counts (in class-index order) from shared/data/SOURCES.md; None = a pool
# carved out of one official file, whose class mix depends on the fixed pool permutation.
EXPECTED = {
    "sst2": ((67349, (29780, 37569)), (872, (428, 444))),
    "mrpc": ((3668, (1194, 2474)), (408, (129, 279))),
    "rte": ((2490, (1249, 1241)), (277, (146, 131))),
    "qnli": ((1000, None), (4463, None)),
    "cola": ((8551, (2528, 6023)), (1043, (322, 721))),
    "boolq": ((32, (14, 18)), (2950, None)),  # test = val.jsonl (3,270) minus the fixed 320-example dev pool
    "cb": ((250, (115, 119, 16)), (56, (23, 28, 5))),
    "copa": ((400, (195, 205)), (100, (55, 45))),
    "superglue_rte": ((2490, (1249, 1241)), (277, (146, 131))),
    "wic": ((5428, (2714, 2714)), (638, (319, 319))),
    "wsc": ((554, (295, 259)), (104, (66, 38))),
    "multirc": ((27243, (15218, 12025)), (4848, (2773, 2075))),
    "ag_news": ((1000, None), (6600, None)),
    "snli": ((9842, (3329, 3235, 3278)), (9824, (3368, 3219, 3237))),
}


def load_spec(name: str) -> TaskSpec:
    return TaskSpec.from_config(OmegaConf.load(TASK_DIR / f"{name}.yaml"))


def make_spec(fmt: str, dir: str, files: dict, fields: dict, labels: list, label: str = "label", **mirror) -> TaskSpec:
    words = [f"w{i}" for i in range(len(labels))]
    return TaskSpec.from_config(
        {
            "name": "tiny",
            "benchmark": "test",
            "labels": labels,
            "verbalizer": words,
            "template": " ".join("{%s}" % f for f in fields) + " {mask} .",
            "metric": "accuracy",
            "mirror": {"format": fmt, "dir": dir, "files": files, "fields": fields, "label": label, **mirror},
            "hub": {"path": "tiny", "name": None, "splits": {"train": "train", "test": "test"}, "fields": {f: f for f in fields}},
        }
    )


@pytest.fixture(scope="module")
def mirror() -> Path:
    if not MIRROR.is_dir():
        pytest.skip(f"no data mirror at {MIRROR}")
    return MIRROR


@pytest.fixture(scope="module")
def splits(mirror):
    """Every task's train and test split, parsed once for the whole module."""
    return {
        spec.name: {split: load_split(spec, split, mirror) for split in ("train", "test")}
        for spec in (TaskSpec.from_config(OmegaConf.load(p)) for p in TASK_FILES)
    }


def class_counts(examples, num_classes):
    counts = [0] * num_classes
    for ex in examples:
        counts[ex.label] += 1
    return tuple(counts)


# --- task specs ---------------------------------------------------------------------------------


def test_there_is_a_yaml_for_every_task_and_its_name_matches_the_file():
    assert {p.stem for p in TASK_FILES} == set(EXPECTED)
    for path in TASK_FILES:
        assert load_spec(path.stem).name == path.stem


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.stem)
def test_every_task_spec_parses_and_names_the_same_fields_for_hub_and_mirror(path):
    spec = TaskSpec.from_config(OmegaConf.load(path))
    assert set(spec.hub.fields) == set(spec.mirror.fields)
    assert set(spec.hub.splits) == set(spec.mirror.files) == {"train", "test"}
    assert len(set(spec.verbalizer)) == spec.num_classes


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.stem)
def test_every_task_has_a_template_a_causal_model_can_fill(path):
    spec = TaskSpec.from_config(OmegaConf.load(path))
    template = spec.template_for("causal_lm")
    assert template.rstrip(" .?!").endswith("{mask}")
    if spec.causal_template:  # same label words, so mirror and hub scores stay comparable across families
        assert spec.template_for("masked_lm") == spec.template


@pytest.mark.parametrize(
    "name, labels, words",
    [
        ("sst2", ("0", "1"), ("bad", "great")),
        ("mrpc", ("0", "1"), ("No", "Yes")),
        ("rte", ("entailment", "not_entailment"), ("Yes", "No")),
        ("snli", ("entailment", "neutral", "contradiction"), ("Yes", "Maybe", "No")),
        ("ag_news", ("1", "2", "3", "4"), ("World", "Sports", "Business", "Tech")),
        ("cb", ("entailment", "contradiction", "neutral"), ("Yes", "No", "Maybe")),
    ],
)
def test_black_box_tuning_tasks_keep_hub_label_order_and_verbalizer(name, labels, words):
    spec = load_spec(name)
    assert (spec.labels, spec.verbalizer) == (labels, words)


# --- loading from the mirror --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_train_and_test_splits_load_with_the_sizes_and_labels_in_sources_md(splits, name):
    spec = load_spec(name)
    for split, (size, counts) in zip(("train", "test"), EXPECTED[name]):
        examples = splits[name][split].examples
        assert len(examples) == size, split
        if counts is not None:
            assert class_counts(examples, spec.num_classes) == counts, split
        assert all(set(ex.fields) == set(spec.field_names) for ex in examples)
        assert all(isinstance(v, str) for v in examples[0].fields.values())


@pytest.mark.parametrize("name, pool, total", [("ag_news", 1000, 7600), ("qnli", 1000, 5463)])
def test_a_pool_carved_from_the_only_labelled_file_never_shares_an_example_with_test(splits, mirror, name, pool, total):
    train, test = splits[name]["train"], splits[name]["test"]
    key = lambda ex: (tuple(ex.fields.values()), ex.label)  # noqa: E731
    assert len(train.examples) == pool and len(train.examples) + len(test.examples) == total
    # Identity, not text: the files contain a few duplicate rows, and each row goes to exactly one side.
    assert not {id(ex) for ex in train.examples} & {id(ex) for ex in test.examples}
    assert train.note and train.note == test.note and "not in the mirror" in train.note
    assert train.source == test.source
    again = load_split(load_spec(name), "train", mirror)
    assert [key(ex) for ex in again.examples] == [key(ex) for ex in train.examples]


def test_substitutes_are_reported_in_the_note_only_where_they_apply(splits):
    assert "FewGLUE" in splits["boolq"]["train"].note and splits["boolq"]["test"].note == splits["boolq"]["train"].note
    assert "dev split" in splits["snli"]["train"].note and splits["snli"]["test"].note is None
    assert splits["sst2"]["train"].note is None and splits["sst2"]["test"].note is None
    assert splits["sst2"]["train"].source.endswith("glue/SST-2/train.tsv")


def test_multirc_flattens_answers_and_groups_them_by_question(splits):
    val = splits["multirc"]["test"].examples
    assert len({ex.group for ex in val}) == 953
    assert len({ex.group for ex in splits["multirc"]["train"].examples}) == 5131
    first = [ex for ex in val if ex.group == val[0].group]
    assert [ex.fields["answer"] for ex in first][:2] == ["No", "Yes"]
    assert [ex.label for ex in first] == [0, 1, 1, 0]
    assert first[0].fields["question"].startswith("Would the mass of a baseball")


def test_raw_layouts_are_read_as_released(splits):
    # MRPC: the BOM before the header must not hide the "Quality" column.
    mrpc = splits["mrpc"]["train"].examples[0]
    assert mrpc.fields["sentence1"].startswith("Amrozi accused his brother") and mrpc.label == 1
    # CoLA has no header: columns are addressed by index.
    cola = splits["cola"]["train"].examples[0]
    assert cola.fields == {"sentence": "Our friends won't buy this analysis, let alone the next one we propose."}
    # WSC: dotted json paths reach into "target".
    wsc = splits["wsc"]["train"].examples[0]
    assert (wsc.fields["span1_text"], wsc.fields["span2_text"]) == ("Mark", "He")
    # AG News: quoted csv, class "3" is the third label (Business).
    ag = splits["ag_news"]["train"].examples + splits["ag_news"]["test"].examples
    assert any(ex.fields["title"] == "Fears for T N pension after talks" and ex.label == 2 for ex in ag)
    # SNLI: the InferSent padding space is not part of the sentence.
    snli = splits["snli"]["test"].examples[0]
    assert not snli.fields["premise"].endswith(" ") and snli.fields["premise"].endswith(".")


# --- loading errors ----------------------------------------------------------------------------


def test_a_missing_mirror_root_is_a_data_error_naming_the_setting(tmp_path):
    with pytest.raises(DataError, match=r"data mirror '.*nowhere' does not exist: set data.mirror="):
        mirror_root(str(tmp_path / "nowhere"))


def test_the_mirror_root_is_explicit_or_auto_and_null_means_the_hub(tmp_path, monkeypatch):
    import prompt_bench.tasks.loading as loading

    other = tmp_path / "other"
    other.mkdir()
    assert mirror_root(str(other)) == other
    assert mirror_root(None) is None  # data.mirror=null: the HF hub, whatever the environment says
    monkeypatch.setenv("PROMPT_BENCH_DATA", str(tmp_path))
    assert mirror_root("auto") == tmp_path  # auto: the environment variable first
    monkeypatch.delenv("PROMPT_BENCH_DATA")
    monkeypatch.setattr(loading, "DEFAULT_MIRROR", other)
    assert mirror_root("auto") == other  # then ../shared/data beside the checkout
    monkeypatch.setattr(loading, "DEFAULT_MIRROR", tmp_path / "absent")
    assert mirror_root("auto") is None  # then the hub


def test_a_missing_file_is_a_data_error_naming_the_file_and_the_fix(tmp_path):
    spec = make_spec("glue_tsv", "glue/X", {"train": "train.tsv", "test": "dev.tsv"}, {"sentence": "sentence"}, ["0", "1"])
    with pytest.raises(DataError, match=r"glue/X/train.tsv' not found: point data.mirror"):
        load_split(spec, "train", tmp_path)


def test_a_tsv_row_with_the_wrong_column_count_is_a_data_error_with_file_and_line(tmp_path):
    (tmp_path / "bad.tsv").write_text("sentence\tlabel\ngood\t1\nno label here\n")
    spec = make_spec("glue_tsv", ".", {"train": "bad.tsv", "test": "bad.tsv"}, {"sentence": "sentence"}, ["0", "1"])
    with pytest.raises(DataError, match=r"bad.tsv:3: expected 2 tab-separated columns, found 1"):
        load_split(spec, "train", tmp_path)


def test_an_unknown_label_is_a_data_error_with_file_line_and_expected_labels(tmp_path):
    (tmp_path / "bad.tsv").write_text("sentence\tlabel\ngood\t1\nodd\tmaybe\n")
    spec = make_spec("glue_tsv", ".", {"train": "bad.tsv", "test": "bad.tsv"}, {"sentence": "sentence"}, ["0", "1"])
    with pytest.raises(DataError, match=r"bad.tsv:3: unknown label 'maybe'; expected one of \['0', '1'\]"):
        load_split(spec, "train", tmp_path)


def test_a_tsv_without_the_configured_column_is_a_data_error_listing_the_columns(tmp_path):
    (tmp_path / "bad.tsv").write_text("text\tlabel\ngood\t1\n")
    spec = make_spec("glue_tsv", ".", {"train": "bad.tsv", "test": "bad.tsv"}, {"sentence": "sentence"}, ["0", "1"])
    with pytest.raises(DataError, match=r"bad.tsv:1: no column \['sentence'\]"):
        load_split(spec, "train", tmp_path)


@pytest.mark.parametrize(
    "second_line, problem",
    [("{not json", "bad json"), ('{"text": "x"}', "missing key 'label'"), ('{"text": "x", "label": 2}', "unknown label '2'")],
)
def test_a_malformed_jsonl_line_is_a_data_error_with_file_and_line(tmp_path, second_line, problem):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "fine", "label": True}) + "\n" + second_line + "\n")
    spec = make_spec("superglue_jsonl", ".", {"train": "bad.jsonl", "test": "bad.jsonl"}, {"text": "text"}, ["False", "True"])
    with pytest.raises(DataError, match=rf"bad.jsonl:2: {problem}"):
        load_split(spec, "train", tmp_path)


def test_json_booleans_and_ints_match_labels_spelled_as_strings(tmp_path):
    (tmp_path / "ok.jsonl").write_text('{"t": {"s": "a"}, "label": false}\n{"t": {"s": 7}, "label": true}\n')
    spec = make_spec("superglue_jsonl", ".", {"train": "ok.jsonl", "test": "ok.jsonl"}, {"text": "t.s"}, ["False", "True"])
    examples = load_split(spec, "train", tmp_path).examples
    assert [(ex.fields["text"], ex.label) for ex in examples] == [("a", 0), ("7", 1)]


def test_a_multirc_answer_without_label_is_a_data_error_with_file_and_line(tmp_path):
    record = {"idx": 0, "passage": {"text": "P", "questions": [{"idx": 0, "question": "Q", "answers": [{"text": "A"}]}]}}
    (tmp_path / "bad.jsonl").write_text(json.dumps(record) + "\n")
    fields = {"paragraph": "passage.text", "question": "question", "answer": "answer.text"}
    spec = make_spec("multirc_jsonl", ".", {"train": "bad.jsonl", "test": "bad.jsonl"}, fields, ["0", "1"])
    with pytest.raises(DataError, match=r"bad.jsonl:1 question 0 answer 0: missing key 'label'"):
        load_split(spec, "train", tmp_path)


def test_snli_files_of_different_length_are_a_data_error(tmp_path):
    (tmp_path / "s1.dev").write_text("a .\nb .\n")
    (tmp_path / "s2.dev").write_text("c .\nd .\n")
    (tmp_path / "labels.dev").write_text("neutral\n")
    fields = {"premise": "s1", "hypothesis": "s2"}
    labels = ["entailment", "neutral", "contradiction"]
    spec = make_spec("snli_lines", ".", {"train": "dev", "test": "dev"}, fields, labels, label="labels")
    with pytest.raises(DataError, match=r"parallel files differ in length"):
        load_split(spec, "train", tmp_path)


def test_a_rewritten_file_is_read_again_despite_the_cache(tmp_path):
    spec = make_spec("glue_tsv", ".", {"train": "t.tsv", "test": "t.tsv"}, {"sentence": "sentence"}, ["0", "1"])
    (tmp_path / "t.tsv").write_text("sentence\tlabel\na\t0\n")
    assert len(load_split(spec, "train", tmp_path).examples) == 1
    (tmp_path / "t.tsv").write_text("sentence\tlabel\na\t0\nbb\t1\n")
    assert len(load_split(spec, "train", tmp_path).examples) == 2


# --- the hub path (no network: a stand-in `datasets` module) -----------------------------------


def fake_datasets(monkeypatch, rows=None, error=None):
    def load_dataset(path, name=None, split=None, revision=None):
        if error:
            raise error
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))


def test_a_hub_failure_is_a_data_error_suggesting_a_mirror(monkeypatch):
    fake_datasets(monkeypatch, error=ConnectionError("hub unreachable"))
    with pytest.raises(DataError, match=r"task 'sst2' from the HF hub .*hub unreachable.*data.mirror=.*PROMPT_BENCH_DATA"):
        load_split(load_spec("sst2"), "train", None)


def test_hub_rows_map_to_the_same_fields_as_the_mirror(monkeypatch):
    fake_datasets(monkeypatch, rows=[{"text": "Title Body", "label": 3}])
    (ex,) = load_split(load_spec("ag_news"), "train", None).examples
    assert ex.fields == {"title": "Title Body", "description": ""} and ex.label == 3

    fake_datasets(monkeypatch, rows=[{"premise": "p", "hypothesis": "h", "label": -1}, {"premise": "p", "hypothesis": "h2", "label": 2}])
    loaded = load_split(load_spec("snli"), "test", None)
    assert [ex.label for ex in loaded.examples] == [2] and loaded.source == "hf:stanfordnlp/snli[test]" and loaded.note is None

    row = {"paragraph": "P", "question": "Q", "answer": "A", "label": 1, "idx": {"paragraph": 4, "question": 7, "answer": 0}}
    fake_datasets(monkeypatch, rows=[row])
    assert load_split(load_spec("multirc"), "test", None).examples[0].group == "4-7"


# --- sampling ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sst2_train(splits):
    return splits["sst2"]["train"].examples


def test_few_shot_has_exactly_k_per_class_in_train_and_dev_and_no_overlap(sst2_train):
    train, dev = few_shot(sst2_train, k=16, seed=13, num_classes=2)
    assert class_counts(train, 2) == (16, 16) and class_counts(dev, 2) == (16, 16)
    assert not {id(ex) for ex in train} & {id(ex) for ex in dev}


def test_few_shot_is_deterministic_per_seed_and_differs_across_seeds(sst2_train):
    a = few_shot(sst2_train, k=16, seed=42, num_classes=2)
    b = few_shot(sst2_train, k=16, seed=42, num_classes=2)
    c = few_shot(sst2_train, k=16, seed=87, num_classes=2)
    assert a == b
    assert a[0] != c[0]


def test_few_shot_with_too_few_examples_of_a_class_says_how_far_to_lower_k(splits):
    cb_train = splits["cb"]["train"].examples  # only 16 neutral examples
    with pytest.raises(
        DataError,
        match=r"k=16 per class needs 32 examples of class 2 for train\+dev but the train split has only 16: lower setting.k to 8",
    ):
        few_shot(cb_train, k=16, seed=0, num_classes=3)
    train, dev = few_shot(cb_train, k=8, seed=0, num_classes=3)
    assert class_counts(train, 3) == class_counts(dev, 3) == (8, 8, 8)


@pytest.mark.parametrize("k", [0, -1])
def test_few_shot_rejects_a_non_positive_k(k):
    with pytest.raises(DataError, match=r"setting.k"):
        few_shot([Example({"s": "a"}, 0)] * 4, k=k, seed=0, num_classes=1)


def test_full_data_holds_out_a_seeded_dev_set_capped_at_max_dev(sst2_train):
    train, dev = full_data(sst2_train, seed=1)
    assert len(dev) == 1000 and len(train) == len(sst2_train) - 1000
    assert not {id(ex) for ex in train} & {id(ex) for ex in dev}
    assert full_data(sst2_train, seed=1)[1] == dev and full_data(sst2_train, seed=2)[1] != dev
    small_train, small_dev = full_data([Example({"s": str(i)}, i % 2) for i in range(55)], seed=0)
    assert (len(small_train), len(small_dev)) == (49, 6)  # round(5.5) -> 6


# --- metrics -----------------------------------------------------------------------------------


def test_accuracy():
    assert metrics.compute("accuracy", [1, 0, 1, 1], [1, 1, 1, 0]) == {"accuracy": 0.5}


def test_mrpc_f1_is_the_f1_of_class_one():
    # tp=2, fp=1, fn=1 -> precision 2/3, recall 2/3, F1 2/3
    out = metrics.compute("f1", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    assert out["f1"] == pytest.approx(2 / 3) and out["accuracy"] == pytest.approx(3 / 5)


def test_matthews_correlation_matches_the_formula():
    # tp=2 tn=1 fp=1 fn=0: (2*1 - 1*0) / sqrt(3 * 2 * 2 * 1) = 2 / sqrt(12)
    out = metrics.compute("matthews", [1, 1, 1, 0], [1, 1, 0, 0])
    assert out["matthews"] == pytest.approx(2 / 12**0.5) and out["accuracy"] == 0.75
    assert metrics.compute("matthews", [0, 1], [1, 0])["matthews"] == pytest.approx(-1.0)


def test_cb_macro_f1_averages_the_per_class_f1():
    # class 0: F1 1; class 1: p=1/2 r=1 -> 2/3; class 2: p=0 r=0 -> 0
    out = metrics.compute("macro_f1", [0, 1, 1], [0, 1, 2])
    assert out["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_multirc_exact_match_counts_questions_with_every_answer_right():
    labels = [1, 0, 1, 0, 1, 1]
    preds = [1, 0, 1, 1, 1, 0]
    groups = ["0-0", "0-0", "0-1", "0-1", "1-0", "1-0"]
    out = metrics.compute("multirc", preds, labels, groups)
    assert out["em"] == pytest.approx(1 / 3)  # only question 0-0 is all right
    # answers: tp=3 fp=1 fn=1 -> F1 3/4
    assert out["f1a"] == pytest.approx(0.75) and out["accuracy"] == pytest.approx(4 / 6)
    assert all(type(v) is float for v in out.values())


@pytest.mark.parametrize(
    "metric, key",
    [("accuracy", "accuracy"), ("f1", "f1"), ("macro_f1", "macro_f1"), ("matthews", "matthews"), ("multirc", "f1a")],
)
def test_primary_names_a_key_that_compute_returns(metric, key):
    assert metrics.primary(metric) == key
    assert key in metrics.compute(metric, [0, 1], [0, 1], groups=["a", "a"])
