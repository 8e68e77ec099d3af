"""Prompt Recycling (method=recycling): maps between embedding spaces, the shared word list, the no-task-data
guarantee, and whole runs between tiny models of different widths and tokenizers."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir

from prompt_bench import experiment
from prompt_bench.artifacts import load_tensors
from prompt_bench.batching import EncodedSplit
from prompt_bench.cli import CONF_DIR
from prompt_bench.errors import ConfigError, ModelError
from prompt_bench.methods.base import Evaluation, RunFiles, WhiteBoxContext
from prompt_bench.methods.recycling import Recycling
from prompt_bench.models import ModelSpec, build_backbone
from prompt_bench.recycling import RECYCLERS, make_recycler, recycle, shared_words, whole_words, word_list
from prompt_bench.tasks import loading

# compute.bf16=false: these runs are compared exactly (golden values written in fp32, fp32 backbones built beside
# them); the default, auto, would run bf16 on a CPU with AVX512-BF16/AMX. tests/test_precision.py covers auto.
FAST = ["setting.k=4", "logger=none", "run.progress=false", "compute.bf16=false"]
SMALL_WORDS = ["method.word_skip=0", "method.n_words=12", "method.n_heldout=4"]


def make(mirror, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        # few-shot k=4 unless a test chooses its setting (cb and boolq would otherwise run their own, FewGLUE)
        chosen = any(o.startswith("setting=") for o in overrides)
        return compose(config_name="config", overrides=[f"data.mirror={mirror}", *([] if chosen else ["setting=few_shot"]),
                                                        *FAST, *overrides])


def tables(n_words=300, d_source=16, d_target=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n_words, d_source, generator=generator), torch.randn(n_words, d_target, generator=generator)


# -- the three maps --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RECYCLERS)
def test_every_recycler_maps_a_prompt_to_the_target_width(name):
    source, target = tables()
    prompt = torch.randn(5, 16)
    fitted = make_recycler(name, nn={"epochs": 2}).fit(source, target)
    recycled = fitted(prompt)
    assert recycled.shape == (5, 24) and recycled.dtype == torch.float32
    assert torch.isfinite(recycled).all()


def test_v2v_lin_recovers_an_exactly_linear_relation_between_two_embedding_tables():
    source, _ = tables()
    true_map = torch.randn(16, 24, generator=torch.Generator().manual_seed(1))
    fitted = make_recycler("v2v_lin").fit(source, source @ true_map)
    torch.testing.assert_close(fitted.projection.float(), true_map, rtol=1e-5, atol=1e-5)
    prompt = torch.randn(7, 16)
    torch.testing.assert_close(fitted(prompt), prompt @ true_map, rtol=1e-4, atol=1e-4)


def test_lin_comb_reproduces_a_prompt_that_is_a_combination_of_word_embeddings():
    source, target = tables()
    weights = torch.randn(4, 300, generator=torch.Generator().manual_seed(2)) / 300
    prompt = weights @ source
    fitted = make_recycler("lin_comb").fit(source, target)
    torch.testing.assert_close(fitted.weights(prompt).float() @ source, prompt, rtol=1e-4, atol=1e-5)
    same_model = make_recycler("lin_comb").fit(source, source)  # target = source: the prompt comes back unchanged
    torch.testing.assert_close(same_model(prompt), prompt, rtol=1e-4, atol=1e-5)


def test_lin_comb_and_v2v_lin_are_the_same_map_in_exact_arithmetic():
    # Both least-squares solutions are the pseudo-inverse ones: p -> p pinv(S) T (a fact, not a bug to fix).
    source, target = tables()
    prompt = torch.randn(6, 16)
    torch.testing.assert_close(make_recycler("lin_comb").fit(source, target)(prompt),
                               make_recycler("v2v_lin").fit(source, target)(prompt), rtol=1e-4, atol=1e-4)


def test_v2v_nn_learns_its_map_and_is_reproducible_from_its_seed():
    source, _ = tables(n_words=200, d_source=8, d_target=8)
    target = torch.relu(source @ torch.randn(8, 8, generator=torch.Generator().manual_seed(3)))
    untrained = make_recycler("v2v_nn", nn={"epochs": 0}).fit(source, target)
    trained = make_recycler("v2v_nn", nn={"epochs": 12, "lr": 1e-2}).fit(source, target)
    error = lambda fitted: (fitted(source) - target).pow(2).mean()  # noqa: E731
    assert error(trained) < 0.3 * error(untrained)
    assert trained.net[0].out_features == 4 * 8  # hidden layer: 4 x the target width
    again = make_recycler("v2v_nn", nn={"epochs": 12, "lr": 1e-2}).fit(source, target)
    torch.testing.assert_close(again(source), trained(source), rtol=0, atol=0)


# -- the shared word list ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizers(tiny_models):
    from transformers import AutoTokenizer

    return (AutoTokenizer.from_pretrained(tiny_models["masked_lm"]),  # WordPiece, uncased
            AutoTokenizer.from_pretrained(tiny_models["causal_lm"]))  # byte-level BPE, cased


def test_shared_words_across_wordpiece_and_bpe_are_whole_tokens_in_both(tokenizers):
    wordpiece, bpe = tokenizers
    shared = shared_words(wordpiece, bpe)
    assert {"great", "bad", "movie", "terrible"} <= set(shared.words)
    for word, wp_id, bpe_id in zip(shared.words, shared.source_ids, shared.target_ids):
        assert wordpiece(word, add_special_tokens=False).input_ids == [wp_id]
        assert bpe(" " + word, add_special_tokens=False).input_ids == [bpe_id]  # BPE writes "Ġword"
        assert word.isascii() and word.isalpha()
    bpe_words = whole_words(bpe)
    assert "It" in bpe_words and "It" not in shared.words  # the uncased WordPiece vocabulary has no "It"
    assert "house" in whole_words(wordpiece) and "house" not in bpe_words  # BPE splits it: not shared
    vocab = bpe.get_vocab()
    pieces = {t for t in vocab if t.isascii() and t.isalpha() and "Ġ" + t not in vocab}  # never written after a space
    assert pieces and not pieces & set(bpe_words)


def test_the_word_list_skips_the_most_frequent_words_and_holds_out_the_next(tokenizers):
    shared = shared_words(*tokenizers)
    words = word_list(*tokenizers, n_words=5, skip=2, n_heldout=3)
    assert words.fit.words == shared.words[2:7] and words.heldout.words == shared.words[7:10]
    assert words.n_shared == len(shared)


def test_recycling_a_prompt_to_its_own_model_with_v2v_lin_gives_it_back(tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["masked_lm"])
    embeddings = torch.randn(len(tokenizer), 32, generator=torch.Generator().manual_seed(4))
    prompt = torch.randn(3, 32)
    recycled, info = recycle(prompt, tokenizer, embeddings, tokenizer, embeddings, "v2v_lin", n_words=200,
                             word_skip=100, n_heldout=50)
    torch.testing.assert_close(recycled, prompt, rtol=1e-4, atol=1e-4)
    assert info["n_fit_words"] == 200 and info["heldout_error"]["relative_error"] < 1e-8


# -- whole runs between tiny models of different widths and tokenizers ----------------------------------------

@pytest.fixture(scope="module")
def wide_causal_lm(tiny_models, tmp_path_factory):
    """A tiny GPT-2 48 wide (the tiny models are 32 wide) with the byte-level BPE tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["causal_lm"])
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=48, n_layer=2, n_head=2, n_positions=128,
                                       bos_token_id=0, eos_token_id=0))
    folder = tmp_path_factory.mktemp("wide_causal_lm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def source_prompt(mirror, tiny_models, tmp_path_factory):
    """prompt.safetensors of a tiny prompt_tuning run on a 32-wide WordPiece masked LM."""
    folder = tmp_path_factory.mktemp("source") / "run"
    experiment.run(make(mirror, "method=prompt_tuning", "task=cb", "model=local", f"model.path={tiny_models['masked_lm']}",
                        "model.family=masked_lm", "method.n_prompt_tokens=4", "method.max_steps=2",
                        "method.eval_every=1", "method.batch_size=4"), folder)
    return folder / "prompt.safetensors"


def target_overrides(folder):
    return ["model=local", f"model.path={folder}", "model.family=causal_lm", "task=cb"]


@pytest.fixture(scope="module")
def recycled_run(mirror, source_prompt, wide_causal_lm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("recycled") / "run"
    results = experiment.run(make(mirror, "method=recycling", f"method.source={source_prompt}", *SMALL_WORDS,
                                  *target_overrides(wide_causal_lm)), folder)
    return folder, results


def test_a_recycling_run_writes_a_run_folder_with_a_prompt_of_the_target_width(recycled_run, source_prompt):
    folder, results = recycled_run
    assert {"config.yaml", "results.json", "prompt.safetensors", "prompt.json"} <= {p.name for p in folder.iterdir()}
    tensors, meta = load_tensors(folder / "prompt.safetensors")
    assert tensors["prompt"].shape == (4, 48)  # 4 tokens, as the source prompt; 48 wide, as the target model
    assert meta["method"] == "recycling" and meta["hidden_size"] == 48 and meta["family"] == "causal_lm"
    info = results["method_info"]
    assert info["source"] == str(source_prompt) and info["source_family"] == "masked_lm"
    assert info["recycler"] == "v2v_lin" and info["n_fit_words"] == 12 and info["n_heldout_words"] == 4
    assert info["n_shared_words"] >= 16 and set(info["heldout_error"]) == {"mse", "relative_error", "cosine"}
    assert results["budget_used"] == 0 and "macro_f1" in results["test"]


class Forbidden:
    """Stands in for the task and its data: any use at all fails the test."""

    def __init__(self, what):
        object.__setattr__(self, "what", what)

    def _refuse(self, *args, **kwargs):
        raise AssertionError(f"recycling touched the {object.__getattribute__(self, 'what')}")

    __getattr__ = __call__ = __len__ = __iter__ = __getitem__ = __bool__ = __setattr__ = _refuse


def test_no_task_data_touches_the_transformation(mirror, recycled_run, source_prompt, wide_causal_lm, monkeypatch):
    # Whatever split or task access the method tried, it would fail: the task, train and dev splits, the scorers
    # and the data loaders are all booby-trapped. The prompt it gives is the one of the normal run above.
    monkeypatch.setattr(EncodedSplit, "batch", Forbidden("batches"))
    monkeypatch.setattr(loading, "load_split", Forbidden("data loader"))
    monkeypatch.setattr(loading, "load_dev_pool", Forbidden("data loader"))
    cfg = make(mirror, "method=recycling", f"method.source={source_prompt}", *SMALL_WORDS,
               *target_overrides(wide_causal_lm))
    from omegaconf import OmegaConf

    backbone = build_backbone(ModelSpec.from_config(OmegaConf.to_container(cfg.model, resolve=True)), device="cpu")
    ctx = WhiteBoxContext(task=Forbidden("task"), train=Forbidden("train split"), dev=Forbidden("dev split"),
                          method=OmegaConf.to_container(cfg.method, resolve=True), optimizer={}, seed=123,
                          tracker=Forbidden("tracker"), checkpoint=Forbidden("checkpoint"),
                          evaluation=Evaluation(dev=Forbidden("dev scorer"), metric="accuracy", test=Forbidden("test scorer")),
                          files=RunFiles(mirror_root=Forbidden("mirror")), backbone=backbone)
    solution = Recycling().fit(ctx)
    saved, _ = load_tensors(recycled_run[0] / "prompt.safetensors")
    torch.testing.assert_close(solution.prompt, saved["prompt"], rtol=0, atol=0)


def test_v2v_nn_and_lin_comb_run_end_to_end_from_wordpiece_to_bpe(mirror, source_prompt, wide_causal_lm, tmp_path):
    for name in ("v2v_nn", "lin_comb"):
        results = experiment.run(make(mirror, "method=recycling", f"method.source={source_prompt}", *SMALL_WORDS,
                                      f"method.recycler={name}", "method.nn.epochs=2", *target_overrides(wide_causal_lm)),
                                 tmp_path / name)
        assert results["method_info"]["recycler"] == name
        assert load_tensors(tmp_path / name / "prompt.safetensors")[0]["prompt"].shape == (4, 48)


# -- errors that name the fix -----------------------------------------------------------------------------------

def test_a_missing_source_is_refused_before_anything_is_loaded(mirror, tmp_path):
    with pytest.raises(ConfigError, match="method.source is required"):
        experiment.plan(make(mirror, "method=recycling"))
    with pytest.raises(ConfigError, match="does not exist: point it at the prompt.safetensors"):
        experiment.plan(make(mirror, "method=recycling", f"method.source={tmp_path / 'nothing.safetensors'}"))
    with pytest.raises(ConfigError, match="method.recycler"):
        experiment.plan(make(mirror, "method=recycling", f"method.source={tmp_path}", "method.recycler=v2v_magic"))


def test_a_source_whose_model_cannot_be_found_is_refused_and_method_source_model_fixes_it(mirror, source_prompt,
                                                                                         tiny_models, tmp_path):
    shutil.copy(source_prompt, tmp_path / "prompt.safetensors")  # no config.yaml beside it
    meta = json.loads(source_prompt.with_suffix(".json").read_text())
    meta.update(model="gone", model_location=str(tmp_path / "deleted-model"))
    (tmp_path / "prompt.json").write_text(json.dumps(meta))
    moved = tmp_path / "prompt.safetensors"
    with pytest.raises(ModelError, match="is not on this machine.*set method.source_model="):
        experiment.plan(make(mirror, "method=recycling", f"method.source={moved}"))
    with pytest.raises(ModelError, match="neither a folder nor a config under conf/model/"):
        experiment.plan(make(mirror, "method=recycling", f"method.source={moved}", "method.source_model=nowhere"))
    planned = experiment.plan(make(mirror, "method=recycling", f"method.source={moved}",
                                   f"method.source_model={tiny_models['masked_lm']}"))
    assert planned.encoding.prompt_len == 4
