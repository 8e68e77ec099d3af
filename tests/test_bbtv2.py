"""BBTv2: deep prompts at every layer, one subspace and one search per layer, layer by layer, black-box."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prompt_bench import experiment
from prompt_bench.artifacts import load_tensors
from prompt_bench.batching import encode_split
from prompt_bench.errors import BudgetExhausted
from prompt_bench.methods.base import Solution
from prompt_bench.methods.bbtv2 import DeepPromptSolution, LayerwiseSearch
from prompt_bench.methods.blackbox import BlackBoxAPI
from prompt_bench.models.backbone import RowContext, rows_scope
from prompt_bench.models.deep_prompts import DEEP_PROMPT, deep_prompt_hooks
from prompt_bench.tasks.spec import Example
from prompt_bench.tracking import read_metrics

from test_backbones import FAMILIES, SENTENCES, TASK, backbone_for
from test_experiment import interrupt_at, make

TINY_BBTV2 = ["method=bbtv2", "method.budget=24", "method.intrinsic_dim=8", "method.n_prompt_tokens=2",
              "optimizer.popsize=4", "method.eval_every=24"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def api_for(backbone, budget=100, prompt_len=3):
    examples = [Example({"sentence": s}, i % 2) for i, s in enumerate(SENTENCES)]
    return BlackBoxAPI(backbone, encode_split(examples, TASK, backbone, prompt_len), budget=budget)


@pytest.fixture(scope="module")
def minilm_api(minilm_backbone):
    return lambda budget=100: api_for(minilm_backbone, budget)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_deep_prompts_enter_every_layer_of_every_family_and_a_population_is_one_batch(tiny_models, family):
    api = api_for(backbone_for(family, tiny_models))
    torch.manual_seed(0)
    n_layers, width = api.num_layers, api.hidden_size
    prompts = torch.randn(3, 3, width) * 0.1
    shallow = api.query(prompts)
    # layer 0's prompt is the input soft prompt: zero prompts at the other layers change nothing
    torch.testing.assert_close(api.query(prompts, deep=torch.zeros(3, n_layers, 3, width)), shallow, rtol=0, atol=1e-6)
    for layer in range(1, n_layers):
        deep = torch.zeros(3, n_layers, 3, width)
        deep[:, layer] = torch.randn(3, 3, width)
        assert not torch.allclose(api.query(prompts, deep=deep), shallow, atol=1e-4), f"layer {layer} had no effect"
    deep = torch.randn(3, n_layers, 3, width)
    together = api.query(prompts, deep=deep)
    alone = torch.cat([api.query(prompts[i : i + 1], deep=deep[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    # the hooks live only as long as a deep query
    assert all(not layer._forward_pre_hooks for layer in api._backbone.transformer_layers())
    torch.testing.assert_close(api.query(prompts), shallow, rtol=0, atol=0)


def test_a_layer_that_takes_its_hidden_states_as_a_keyword_gets_the_prompt_too():
    class Block(torch.nn.Module):
        def forward(self, hidden_states, scale=1.0):
            return hidden_states * scale

    class Stub:
        def __init__(self):
            self.blocks = torch.nn.ModuleList([Block(), Block()])

        def transformer_layers(self):
            return self.blocks

    stub, hidden = Stub(), torch.zeros(2, 5, 4)
    deep = torch.ones(2, 2, 2, 4)
    rows = RowContext({DEEP_PROMPT: deep}, prompt_offset=1, prompt_len=2)
    with rows_scope(stub, rows), deep_prompt_hooks(stub), deep_prompt_hooks(stub):  # nested: added once
        out = stub.blocks[1](hidden_states=hidden)
        assert torch.equal(stub.blocks[0](hidden), out)
    assert torch.equal(out[:, 1:3], torch.ones(2, 2, 4)) and out[:, [0, 3, 4]].abs().sum() == 0


def test_a_candidate_with_its_deep_prompt_costs_one_call_and_dev_scoring_is_free(minilm_api):
    api = minilm_api(5)
    prompts, deep = torch.zeros(4, 3, api.hidden_size), torch.zeros(4, api.num_layers, 3, api.hidden_size)
    assert api.query(prompts, deep=deep).shape == (4, len(SENTENCES), 2) and api.calls == 4
    with pytest.raises(BudgetExhausted):
        api.query(prompts[:2], deep=deep[:2])
    api.score(api._train, prompts[0], deep=deep[0])
    assert api.calls == 4 and api.eval_calls == 1
    with pytest.raises(ValueError, match="deep prompts must be"):
        api.score(api._train, prompts[0], deep=deep[0, 1:])


def test_per_layer_hidden_std_is_a_free_public_fact_positive_and_different_by_layer(minilm_api):
    api = minilm_api(10)
    std = api.layer_hidden_std()
    assert len(std) == api.num_layers == 6
    assert all(s > 0 for s in std) and len(set(round(s, 6) for s in std)) == 6
    assert std[1] != pytest.approx(api.embedding_std, rel=0.05)  # hidden states are not embeddings' scale
    assert api.calls == 0 and api.layer_hidden_std() == std


def test_the_deep_solution_scores_evaluation_batches_with_its_deep_prompt(minilm_api, minilm_backbone):
    api = minilm_api()
    torch.manual_seed(1)
    prompt, deep = torch.randn(3, api.hidden_size) * 0.05, torch.randn(api.num_layers, 3, api.hidden_size)
    deep[0] = 0
    solution = DeepPromptSolution(prompt=prompt, tensors={"deep_prompt": deep})
    scored = solution.scorer(minilm_backbone)(api._train)
    torch.testing.assert_close(scored, api.score(api._train, prompt, deep=deep))
    assert not torch.allclose(scored, Solution(prompt=prompt).scorer(minilm_backbone)(api._train), atol=1e-4)


def _drive(search, generations):
    told, asked = [], []
    for _ in range(generations):
        z = search.ask()
        asked.append((search.layer, z.reshape(len(z), search.n_layers, search.layer_dim), search.incumbent.copy()))
        losses = ((z - 1.0) ** 2).sum(1).tolist()
        search.tell(losses)
        told.append(losses)
    return asked, told


@pytest.mark.parametrize("per_layer", [1, 2])
def test_layers_are_searched_in_turn_with_the_others_held_at_their_best(per_layer):
    cfg = {"name": "cma", "popsize": 5}
    search = LayerwiseSearch(cfg, n_layers=3, dim=4, budget=120, seed=0, sigma=1.0, generations_per_layer=per_layer)
    asked, told = _drive(search, 6 * per_layer)
    assert search.layers == [layer for _ in range(2) for layer in range(3) for _ in range(per_layer)]
    for layer, z, incumbent in asked:
        others = [l for l in range(3) if l != layer]
        assert np.array_equal(z[:, others], np.repeat(incumbent[None, others], len(z), axis=0))
        assert not np.allclose(z[:, layer], incumbent[layer])
    for layer in range(3):  # a layer's incumbent is its lowest-loss candidate so far
        mine = [(min(l), z[int(np.argmin(l)), layer]) for (lay, z, _), l in zip(asked, told) if lay == layer]
        assert np.array_equal(search.incumbent[layer], min(mine, key=lambda t: t[0])[1])
    replayed = LayerwiseSearch(cfg, n_layers=3, dim=4, budget=120, seed=0, sigma=1.0, generations_per_layer=per_layer)
    for losses in told:
        replayed.ask(len(losses))
        replayed.tell(losses)
    np.testing.assert_array_equal(search.ask(), replayed.ask())


def test_bbtv2_runs_end_to_end_on_minilm_and_saves_every_layers_prompt(mirror, tmp_path):
    results = experiment.run(make(mirror, *TINY_BBTV2, "task=copa"), tmp_path / "run")  # 100 short test examples
    assert results["budget_used"] == 24 and results["budget_unit"] == "api_calls"
    tensors, meta = load_tensors(tmp_path / "run" / "prompt.safetensors")
    assert tensors["prompt"].shape == (2, 384) and tensors["z"].shape == (6, 8)
    assert tensors["deep_prompt"].shape == (6, 2, 384)
    assert tensors["deep_prompt"][0].abs().sum() == 0 and tensors["deep_prompt"][1:].abs().sum() > 0
    assert meta["method"] == "bbtv2" and meta["n_layers"] == 6 and len(set(meta["projection_std"])) == 6
    steps = [r["step"] for r in read_metrics(tmp_path / "run") if "train/loss" in r]
    assert steps == [4, 8, 12, 16, 20, 24]  # one 4-candidate generation per layer, keyed by API calls


def test_an_interrupted_bbtv2_run_resumes_to_the_uninterrupted_result(mirror, tmp_path, tiny_models, monkeypatch):
    model = ["model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm"]
    cfg = make(mirror, *model, *TINY_BBTV2, "method.budget=40", "method.eval_every=8", "task=rte")
    reference = experiment.run(cfg, tmp_path / "reference")
    interrupt_at(monkeypatch, 28)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()
    monkeypatch.undo()
    resumed = experiment.run(cfg, tmp_path / "run")
    assert resumed["test"] == reference["test"] and resumed["budget_used"] == 40
    a, _ = load_tensors(tmp_path / "reference" / "prompt.safetensors")
    b, _ = load_tensors(tmp_path / "run" / "prompt.safetensors")
    for key in ("prompt", "deep_prompt", "z"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert read_metrics(tmp_path / "run") == read_metrics(tmp_path / "reference")
