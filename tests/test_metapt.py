"""MetaPT: a prompt meta-learned on clustered, pseudo-labelled text, then prompt tuning from it; PPT beside it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prompt_bench import experiment
from prompt_bench.batching import encode_split
from prompt_bench.checkpoint import Checkpoint
from prompt_bench.errors import ConfigError, DataError
from prompt_bench.pretraining import clustering, corpus, meta, pseudo_labels

from test_backbones import backbone_for
from test_experiment import make

TEXTS = ["the match ended in a late goal", "the striker scored twice", "a penalty decided the final",
         "the keeper saved the shot", "simmer the sauce for an hour", "add garlic and butter to the pan",
         "bake the bread until golden", "season the soup with salt"] * 2
TINY = {"algorithm": "fomaml", "meta_steps": 3, "tasks_per_batch": 2, "batch_size": 2, "inner_lr": 0.5,
        "inner_steps": 1, "outer_lr": 0.05, "seed": 0, "checkpoint_every": 1}


@pytest.fixture(scope="module")
def tiny(tiny_models):
    backbone = backbone_for("masked_lm", tiny_models)
    task = pseudo_labels.sentence_task()
    examples = pseudo_labels.pseudo_label(TEXTS, backbone, task, None, 8)
    return backbone, encode_split(examples, task, backbone, 3), [np.arange(0, 8), np.arange(8, 16)]


def run_meta(tiny, checkpoint=None, **overrides):
    backbone, split, tasks = tiny
    init = torch.randn(3, backbone.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.1
    return meta.meta_train(backbone, split, tasks, init, {**TINY, **overrides}, checkpoint)


def test_a_corpus_file_is_read_as_text_lines_jsonl_records_or_a_tsv_column(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\none\n")
    (tmp_path / "b.jsonl").write_text('{"body": "x"}\n{"body": "y"}\n')
    (tmp_path / "c.tsv").write_text("id\tsentence\n1\tp\n2\tq\n")
    assert corpus.load_corpus({"kind": "file", "path": str(tmp_path / "a.txt")}, None, 0) == ["one", "two"]
    assert corpus.load_corpus({"kind": "file", "path": str(tmp_path / "b.jsonl"), "field": "body"}, None, 0) == ["x", "y"]
    assert corpus.load_corpus({"kind": "file", "path": str(tmp_path / "c.tsv")}, None, 0) == ["p", "q"]


def test_a_malformed_corpus_names_the_line_and_the_fix(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(DataError, match="line 2 is not JSON"):
        corpus.load_corpus({"kind": "file", "path": str(tmp_path / "bad.jsonl")}, None, 0)
    with pytest.raises(DataError, match="does not exist"):
        corpus.load_corpus({"kind": "file", "path": str(tmp_path / "none.txt")}, None, 0)


def test_task_texts_are_the_train_texts_with_the_labels_dropped_and_sampled_by_seed(mirror):
    texts = corpus.load_corpus({"kind": "task_texts", "task": "sst2", "max_texts": 50}, mirror, 0)
    assert len(texts) == 50 and all(isinstance(t, str) and t for t in texts)
    assert texts != corpus.load_corpus({"kind": "task_texts", "task": "sst2", "max_texts": 50}, mirror, 1)


def test_pseudo_labels_come_from_the_model_and_use_more_than_one_class(tiny):
    backbone, split, _ = tiny
    assert len(set(split.labels)) > 1 and all(0 <= y < 5 for y in split.labels)


def test_kmeans_over_minilm_embeddings_separates_two_topics_and_lda_gives_k_topics(minilm_backbone, tmp_path):
    task = pseudo_labels.sentence_task()
    embed = lambda xs: clustering.sentence_embeddings(xs, minilm_backbone, task)  # noqa: E731
    groups = clustering.cluster(TEXTS[:8], "kmeans", 2, 0, embed)
    assert len(set(groups[:4])) == 1 and len(set(groups[4:])) == 1 and groups[0] != groups[4]
    topics = clustering.cluster(TEXTS * 3, "lda", 2, 0)
    assert set(topics.tolist()) <= {0, 1}
    summary = clustering.write_summary(tmp_path / "clusters.json", TEXTS[:8], groups, [0] * 8)
    assert sum(c["size"] for c in summary["clusters"]) == 8 and json.loads((tmp_path / "clusters.json").read_text())


def test_every_algorithm_moves_the_prompt_and_maml_without_an_inner_step_is_first_order_maml(tiny):
    start = run_meta(tiny, meta_steps=0)
    results = {a: run_meta(tiny, algorithm=a) for a in meta.ALGORITHMS}
    for algorithm, prompt in results.items():
        assert not torch.allclose(prompt, start), algorithm
    assert not torch.allclose(results["maml"], results["fomaml"])  # second-order terms matter
    torch.testing.assert_close(run_meta(tiny, algorithm="maml", inner_lr=0.0), run_meta(tiny, algorithm="fomaml", inner_lr=0.0))


def test_reptile_with_one_inner_step_moves_like_multitask_training_on_the_support_batches(tiny):
    # one-step Reptile's meta-gradient is inner_lr x the support gradient, and Adam's first step is nearly
    # scale-free (up to its eps on tiny gradient entries), so both take the same first step
    start = run_meta(tiny, meta_steps=0)
    reptile = run_meta(tiny, algorithm="reptile", meta_steps=1) - start
    multitask = run_meta(tiny, algorithm="multitask", meta_steps=1) - start
    assert torch.nn.functional.cosine_similarity(reptile.flatten(), multitask.flatten(), dim=0) > 0.999


def test_an_interrupted_pre_training_resumes_to_the_same_prompt(tiny, tmp_path):
    reference = run_meta(tiny, meta_steps=4)
    run_meta(tiny, Checkpoint(tmp_path), meta_steps=2)
    torch.testing.assert_close(run_meta(tiny, Checkpoint(tmp_path), meta_steps=4), reference)


def test_metapt_pre_trains_once_then_every_run_reuses_the_cached_prompt(mirror, tmp_path, tiny_models):
    model = ["model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm"]
    small = [*model, "task=sst2", "method.n_prompt_tokens=3", "method.max_steps=2", "method.eval_every=2",
             "method.batch_size=4", "method.pretrain.meta_steps=2", "method.pretrain.corpus.max_texts=40",
             "method.pretrain.k=2", "method.pretrain.batch_size=4", f"run.root={tmp_path}"]
    first = experiment.run(make(mirror, "method=metapt", *small, "method.pretrain.clustering=lda"), tmp_path / "a")
    info = first["method_info"]
    assert info["pretraining"]["reused"] is False and info["pretraining"]["clustering"] == "lda"
    assert (tmp_path / "a" / "clusters.json").is_file() and info["pretraining"]["pretrain_wall_time_s"] > 0
    again = experiment.run(make(mirror, "method=metapt", *small, "method.pretrain.clustering=lda", "seed=13"), tmp_path / "b")
    assert again["method_info"]["pretraining"]["reused"] is True
    assert again["method_info"]["pretrained_prompt"] == info["pretrained_prompt"]
    ppt = experiment.run(make(mirror, "method=ppt", *small), tmp_path / "c")
    assert ppt["method_info"]["pretraining"]["algorithm"] == "multitask"


def test_bad_pre_training_settings_are_refused_before_loading(mirror):
    with pytest.raises(ConfigError, match="clustering=none goes with algorithm=multitask"):
        experiment.plan(make(mirror, "method=metapt", "method.pretrain.clustering=none"))
    with pytest.raises(ConfigError, match="method=ppt pre-trains on the union"):
        experiment.plan(make(mirror, "method=ppt", "method.pretrain.clustering=kmeans"))
    with pytest.raises(ConfigError, match="algorithm"):
        experiment.plan(make(mirror, "method=metapt", "method.pretrain.algorithm=sgd"))
