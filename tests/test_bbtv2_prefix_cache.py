"""BBTv2's prefix cache (method.prefix_cache): the layers every candidate of a generation shares run once, and
nothing a run reports changes, bit for bit on one CPU thread, in every family (issue 22, item 1).

The models here are 4 layers deep (conftest's are 2), so layers 1, 2 and 3 are each searched with a prefix of
their own length, and Llama (rotary positions, a block that returns a bare tensor) stands beside GPT-2 for
causal_lm. With several CPU threads MKL may split the reduction of a small GEMM across threads, so a prefix
computed on one candidate's rows can differ from the same rows inside the whole population's batch in the last
bits: conf/method/bbtv2.yaml says so where the option is."""

from __future__ import annotations

import pytest
import torch

from prompt_bench import experiment
from prompt_bench.artifacts import load_tensors
from prompt_bench.batching import encode_split
from prompt_bench.methods.bbtv2 import LayerwiseSearch
from prompt_bench.methods import blackbox
from prompt_bench.methods.blackbox import BlackBoxAPI, shared_prefix
from prompt_bench.models import ModelSpec, build_backbone
from prompt_bench.prompts.placeholders import Placeholders
from prompt_bench.tasks.spec import Example
from prompt_bench.tracking import read_metrics

from conftest import _bpe_tokenizer, _wordpiece_tokenizer
from test_backbones import SENTENCES, TASK
from test_experiment import interrupt_at, make

DEPTH = 4
#: model name -> family; llama is a second causal_lm
MODELS = {"masked_lm": "masked_lm", "causal_lm": "causal_lm", "llama": "causal_lm", "seq2seq": "seq2seq",
          "sentence_encoder": "sentence_encoder"}
#: 10 generations of 4 candidates over 4 layers: two and a half rounds, every layer searched with its incumbents
RUN = ["method=bbtv2", "method.budget=40", "method.intrinsic_dim=8", "method.n_prompt_tokens=3", "optimizer.popsize=4",
       "method.eval_every=12", "task=rte"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def deep_models(tmp_path_factory) -> dict[str, str]:
    """{name: folder} of tiny random 4-layer models, one per family and Llama."""
    from transformers import (BertConfig, BertForMaskedLM, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM, T5Config, T5ForConditionalGeneration)

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("deep_models")
    wordpiece, bpe = _wordpiece_tokenizer(), _bpe_tokenizer()
    bert = dict(vocab_size=wordpiece.vocab_size, hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=128)
    built = {
        "masked_lm": (BertForMaskedLM(BertConfig(**bert)), wordpiece),
        "sentence_encoder": (BertModel(BertConfig(**bert), add_pooling_layer=False), wordpiece),
        "causal_lm": (GPT2LMHeadModel(GPT2Config(vocab_size=len(bpe), n_embd=32, n_layer=DEPTH, n_head=2, n_positions=128,
                                                 bos_token_id=0, eos_token_id=0)), bpe),
        "llama": (LlamaForCausalLM(LlamaConfig(vocab_size=len(bpe), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=DEPTH, num_attention_heads=2, num_key_value_heads=1,
                                               max_position_embeddings=128, bos_token_id=0, eos_token_id=0,
                                               pad_token_id=0)), bpe),
        "seq2seq": (T5ForConditionalGeneration(T5Config(vocab_size=wordpiece.vocab_size, d_model=32, d_kv=16, d_ff=64,
                                                        num_layers=DEPTH, num_heads=2, decoder_start_token_id=0,
                                                        pad_token_id=0)), wordpiece),
    }
    folders = {}
    for name, (model, tokenizer) in built.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        folders[name] = str(root / name)
    return folders


def _placeholders(family: str) -> Placeholders:
    return Placeholders(3, first_id=200 if family == "causal_lm" else 1000)  # the BPE vocabulary has 400 words


def _api(name: str, folder: str, mode: str, max_tokens: int) -> BlackBoxAPI:
    family = MODELS[name]
    backbone = build_backbone(ModelSpec.from_config({"name": name, "family": family, "path": folder}), device="cpu",
                              max_tokens_per_forward=max_tokens)
    examples = [Example({"sentence": s + " and more" * (i % 3)}, i % 2) for i, s in enumerate(SENTENCES * 2)]
    split = (encode_split(examples, TASK, backbone, 3) if mode == "insert"
             else encode_split(examples, TASK, backbone, placeholders=_placeholders(family)))
    return BlackBoxAPI(backbone, split, budget=10**6)


def _rows_through(layer: torch.nn.Module) -> tuple[list[int], object]:
    """Record the rows each real forward of `layer` computes: its first weight (a query projection, GPT-2's first
    layer norm) sees [rows, T, d]; a replayed layer never calls it."""
    seen: list[int] = []
    first = next(m for m in layer.modules() if not list(m.children()) and list(m.parameters()))
    return seen, first.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[0]))


@pytest.mark.parametrize("mode", ["add", "insert"])
@pytest.mark.parametrize("name", list(MODELS))
@torch.no_grad()
def test_a_generation_scores_bit_for_bit_as_uncached_while_its_shared_layers_run_once(deep_models, name, mode):
    for max_tokens in (16384, 48):  # one forward per population, and many small chunks of examples and prompts
        api = _api(name, deep_models[name], mode, max_tokens)
        torch.manual_seed(1)
        population, width = 5, api.hidden_size
        for layer in range(1, DEPTH + 1):  # DEPTH: every layer shared (duplicate candidates)
            prompts = (torch.randn(1, 3, width) * 0.1).repeat(population, 1, 1)
            deep = torch.randn(1, DEPTH, 3, width).repeat(population, 1, 1, 1)
            deep[:, 0] = 0
            deep[:, layer:] = torch.randn(population, DEPTH - layer, 3, width)
            assert shared_prefix(prompts, deep) == layer
            uncached = api.query(prompts, deep=deep)
            seen, handle = _rows_through(api._backbone.transformer_layers()[0])
            try:
                cached = api.query(prompts, deep=deep, prefix_cache=True)
            finally:
                handle.remove()
            assert torch.equal(cached, uncached), (name, mode, max_tokens, layer)
            # layer 0 ran once per chunk of examples on one candidate's rows: each train example once in all
            assert sum(seen) == len(api.train_labels), (name, seen)
        assert api.calls == 2 * population * DEPTH  # billed per candidate, cached or not
        assert all("forward" not in vars(block) for block in api._backbone.transformer_layers())  # layers restored


def test_the_shared_prefix_is_compared_bit_for_bit_and_needs_two_candidates():
    prompts, deep = torch.zeros(3, 2, 4), torch.zeros(3, 4, 2, 4)
    assert shared_prefix(prompts, deep) == 4 and shared_prefix(prompts, None) == 0
    assert shared_prefix(prompts[:1], deep[:1]) == 0
    deep[1, 2, 0, 0] = -0.0  # equal as numbers, not as bits: -0.0 + -0.0 keeps its sign where 0.0 would not
    assert shared_prefix(prompts, deep) == 2
    deep[2, 0, 1, 1] = 1.0
    assert shared_prefix(prompts, deep) == 0
    prompts[0, 0, 0] = 1.0
    assert shared_prefix(prompts, torch.zeros(3, 4, 2, 4)) == 0


def _run(mirror, folder, model: str, path: str, cached: bool, monkeypatch=None):
    """A BBTv2 run; returns (results, every generation's losses as told to the search, the layers each billed
    query found shared)."""
    told: list[list[float]] = []
    shared: list[int] = []
    original_tell, original_shared = LayerwiseSearch.tell, blackbox.shared_prefix

    def tell(self, losses):
        told.append(list(losses))
        return original_tell(self, losses)

    def shared_layers(prompts, deep):
        shared.append(original_shared(prompts, deep))
        return shared[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LayerwiseSearch, "tell", tell)
        patch.setattr(blackbox, "shared_prefix", shared_layers)
        cfg = make(mirror, "model=local", f"model.path={path}", f"model.family={MODELS[model]}", *RUN,
                   f"method.prefix_cache={str(cached).lower()}",
                   *(["method.placeholder_start=200"] if MODELS[model] == "causal_lm" else []))
        return experiment.run(cfg, folder), told, shared


def _same_run(a, b) -> None:
    results_a, folder_a = a
    results_b, folder_b = b
    assert results_a["test"] == results_b["test"] and results_a["dev"] == results_b["dev"]
    tensors_a, meta_a = load_tensors(folder_a / "prompt.safetensors")
    tensors_b, meta_b = load_tensors(folder_b / "prompt.safetensors")
    assert tensors_a.keys() == tensors_b.keys()
    for key in tensors_a:
        assert torch.equal(tensors_a[key], tensors_b[key]), key
    assert meta_a["selected"] == meta_b["selected"] and meta_a["best_calls"] == meta_b["best_calls"]
    assert read_metrics(folder_a) == read_metrics(folder_b)


@pytest.mark.parametrize("model", list(MODELS))
def test_a_cached_bbtv2_run_equals_the_uncached_one_bit_for_bit(mirror, deep_models, tmp_path, model):
    uncached, told_uncached, shared = _run(mirror, tmp_path / "uncached", model, deep_models[model], cached=False)
    assert shared == []
    cached, told_cached, shared = _run(mirror, tmp_path / "cached", model, deep_models[model], cached=True)
    assert shared == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]  # generation g searches layer g % 4: layers below it run once
    assert len(told_cached) == 10 and told_cached == told_uncached  # every loss told to the search, exactly
    assert uncached["budget_used"] == cached["budget_used"] == 40
    _same_run((uncached, tmp_path / "uncached"), (cached, tmp_path / "cached"))


@pytest.mark.parametrize("model", ["masked_lm", "seq2seq"])
def test_an_interrupted_cached_run_resumes_to_the_uninterrupted_result(mirror, deep_models, tmp_path, monkeypatch, model):
    reference, _, _ = _run(mirror, tmp_path / "reference", model, deep_models[model], cached=True)
    interrupt_at(monkeypatch, 28)  # in the third round, while layer 2 is searched
    with pytest.raises(KeyboardInterrupt):
        _run(mirror, tmp_path / "run", model, deep_models[model], cached=True)
    assert not (tmp_path / "run" / "results.json").exists()
    monkeypatch.undo()
    resumed, told, _ = _run(mirror, tmp_path / "run", model, deep_models[model], cached=True)
    assert len(told) == 10 and resumed["budget_used"] == 40  # 6 generations replayed from the checkpoint, 4 run
    _same_run((reference, tmp_path / "reference"), (resumed, tmp_path / "run"))
