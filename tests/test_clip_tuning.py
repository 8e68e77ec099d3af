"""Clip-Tuning: thinned networks (fixed, seeded dropout masks), their mixture of rewards, their API price, and
whole runs that resume exactly."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from prompt_bench import experiment
from prompt_bench.optim.dfo import make_search
from prompt_bench.artifacts import load_tensors
from prompt_bench.batching import encode_split
from prompt_bench.cli import CONF_DIR
from prompt_bench.errors import BudgetExhausted, ConfigError
from prompt_bench.experiment import plan
from prompt_bench.methods.search_loop import prompt_loss
from prompt_bench.methods.blackbox import BlackBoxAPI
from prompt_bench.methods.clip_tuning import ClipTuningSolution, mixed_loss
from prompt_bench.models import ModelSpec, build_backbone
from prompt_bench.models.backbone import current_rows
from prompt_bench.models.thinning import ThinnedSpec, ensemble_logits, hidden_sites, keep_mask, thinned_logits
from prompt_bench.tasks.spec import Example
from prompt_bench.tracking import read_metrics

from test_backbones import SENTENCES, TASK, backbone_for, batch_for
from test_experiment import interrupt_at, make

SITES = ["hidden", "attention", "both"]
MODELS = ["masked_lm", "causal_lm", "seq2seq", "llama", "minilm"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny Llama (no dropout modules at all), saved and loaded like any local model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import _bpe_tokenizer

    torch.manual_seed(0)
    tokenizer = _bpe_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=128, bos_token_id=0, eos_token_id=0, pad_token_id=0))
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    backbone = build_backbone(ModelSpec.from_config({"name": "tiny-llama", "family": "causal_lm", "path": str(folder)}),
                              device="cpu")
    return backbone


@pytest.fixture(scope="module")
def backbones(tiny_models, tiny_llama, minilm_backbone):
    tiny = {family: backbone_for(family, tiny_models) for family in ("masked_lm", "causal_lm", "seq2seq")}
    return {**tiny, "llama": tiny_llama, "minilm": minilm_backbone}


def prompts_for(backbone, n=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, backbone.hidden_size, generator=generator) * 0.1


# -- the thinned networks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sites", SITES)
@pytest.mark.parametrize("name", MODELS)
def test_with_clip_rate_zero_every_thinned_network_is_the_full_network(backbones, name, sites):
    backbone = backbones[name]
    batch, prompts = batch_for(backbone), prompts_for(backbone)
    full = backbone.label_logits(batch, prompts)
    thinned = thinned_logits(backbone, batch, prompts, ThinnedSpec(n_networks=3, clip_rate=0.0, sites=sites, seed=1))
    assert thinned.shape == (3, 3, len(SENTENCES), 2)
    for network in thinned:
        torch.testing.assert_close(network, full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sites", SITES)
@pytest.mark.parametrize("name", MODELS)
def test_different_thinned_networks_give_different_logits_and_differ_from_the_full_network(backbones, name, sites):
    backbone = backbones[name]
    batch, prompts = batch_for(backbone), prompts_for(backbone)
    full = backbone.label_logits(batch, prompts)
    thinned = thinned_logits(backbone, batch, prompts, ThinnedSpec(n_networks=3, clip_rate=0.3, sites=sites, seed=1))
    for k in range(3):
        assert (thinned[k] - full).abs().max() > 1e-4
        for j in range(k):
            assert (thinned[k] - thinned[j]).abs().max() > 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_a_thinned_network_is_stationary_the_same_logits_on_every_call_and_in_any_population(backbones, name):
    backbone = backbones[name]
    batch, prompts = batch_for(backbone), prompts_for(backbone, n=4)
    spec = ThinnedSpec(n_networks=2, clip_rate=0.3, sites="both", seed=7)
    first = thinned_logits(backbone, batch, prompts, spec)
    again = thinned_logits(backbone, batch, prompts, spec)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    others = torch.cat([prompts_for(backbone, n=2, seed=9), prompts[2:3]])  # candidate 2 among new neighbours
    torch.testing.assert_close(thinned_logits(backbone, batch, others, spec)[:, 2], first[:, 2], atol=1e-5, rtol=1e-4)
    reseeded = thinned_logits(backbone, batch, prompts, ThinnedSpec(n_networks=2, clip_rate=0.3, sites="both", seed=8))
    assert (reseeded - first).abs().max() > 1e-4  # the masks come from the seed


@pytest.mark.parametrize("name", MODELS)
def test_all_networks_and_candidates_in_one_batch_equal_one_network_and_candidate_at_a_time(backbones, name):
    backbone = backbones[name]
    batch, prompts = batch_for(backbone), prompts_for(backbone)
    spec = ThinnedSpec(n_networks=3, clip_rate=0.3, sites="both", seed=3)
    together = thinned_logits(backbone, batch, prompts, spec)
    alone = torch.stack([
        torch.cat([thinned_logits(backbone, batch, prompts[i : i + 1], spec, networks=[k])[0] for i in range(3)])
        for k in range(3)
    ])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    backbone.max_tokens_per_forward = 8  # one row per forward: chunking does not move a row to another network
    try:
        torch.testing.assert_close(thinned_logits(backbone, batch, prompts, spec), together, atol=1e-5, rtol=1e-4)
    finally:
        backbone.max_tokens_per_forward = 2048


def test_the_model_is_left_exactly_as_it_was_after_a_thinned_forward(backbones):
    backbone = backbones["masked_lm"]
    batch, prompts = batch_for(backbone), prompts_for(backbone)
    before = backbone.label_logits(batch, prompts)
    implementation = backbone.model.config._attn_implementation
    thinned_logits(backbone, batch, prompts, ThinnedSpec(n_networks=2, clip_rate=0.5, sites="both"))
    assert backbone.model.config._attn_implementation == implementation
    assert not any(m._forward_hooks for m in backbone.model.modules())
    assert current_rows(backbone) is None
    torch.testing.assert_close(backbone.label_logits(batch, prompts), before, rtol=0, atol=0)


def test_hidden_sites_are_the_dropout_modules_or_for_llama_the_residual_branches(backbones):
    bert = backbones["masked_lm"].model
    assert hidden_sites(backbones["masked_lm"]) == [m for m in bert.modules() if isinstance(m, torch.nn.Dropout)]
    llama = backbones["llama"]
    assert not any(isinstance(m, torch.nn.Dropout) for m in llama.model.modules())
    blocks = llama.transformer_layers()
    assert hidden_sites(llama) == [m for block in blocks for m in (block.self_attn, block.mlp)]


def test_masks_clip_about_clip_rate_of_the_units_independently_and_do_not_depend_on_sequence_length():
    networks, heads = torch.arange(6)[:, None, None, None], torch.arange(4)[None, :, None, None]

    def mask(length):  # (seed 42, networks, kind 2, module 5, heads, query position, key position)
        positions = torch.arange(length)
        return keep_mask(0.3, 42, networks, 2, 5, heads, positions[None, None, :, None], positions[None, None, None, :])

    long, short = mask(96), mask(40)
    assert long.float().mean().item() == pytest.approx(0.7, abs=0.01)
    assert torch.equal(long[:, :, :40, :40], short)
    agreement = (long[0] == long[1]).float().mean().item()  # independent networks: p^2 + (1 - p)^2
    assert agreement == pytest.approx(0.3**2 + 0.7**2, abs=0.01)


def test_a_thinned_spec_refuses_impossible_values():
    for bad in (dict(n_networks=0, clip_rate=0.1), dict(n_networks=2, clip_rate=1.0),
                dict(n_networks=2, clip_rate=0.1, sites="ffn")):
        with pytest.raises(ConfigError):
            ThinnedSpec(**bad)


# -- the mixture of rewards ----------------------------------------------------------------------------------
def test_mean_loss_averages_the_per_network_losses_and_mean_prob_scores_the_averaged_probabilities():
    labels = torch.tensor([0, 1])
    logits = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0)) * 3  # [N, P, B, C]
    expected = torch.stack([prompt_loss(logits[k], labels, "ce") for k in range(3)]).mean(0)
    torch.testing.assert_close(mixed_loss(logits, labels, "ce", "mean_loss"), expected)
    probs = logits.softmax(-1).mean(0)  # [P, B, C]
    expected = -probs[:, torch.arange(2), labels].log().mean(1)
    torch.testing.assert_close(mixed_loss(logits, labels, "ce", "mean_prob"), expected)
    # Jensen: the loss of the averaged probabilities never exceeds the averaged loss
    assert (mixed_loss(logits, labels, "ce", "mean_prob") <= mixed_loss(logits, labels, "ce", "mean_loss") + 1e-6).all()
    assert mixed_loss(logits, labels, "hinge", "mean_loss").shape == (4,)


def test_one_network_mixes_to_its_own_loss():
    labels = torch.tensor([1, 0, 1])
    logits = torch.randn(1, 2, 3, 2)
    for mixing in ("mean_loss", "mean_prob"):
        torch.testing.assert_close(mixed_loss(logits, labels, "ce", mixing), prompt_loss(logits[0], labels, "ce"))


# -- API calls -----------------------------------------------------------------------------------------------
@pytest.fixture
def api(backbones):
    backbone = backbones["minilm"]
    train = encode_split([Example({"sentence": s}, i % 2) for i, s in enumerate(SENTENCES)], TASK, backbone, 3)
    return BlackBoxAPI(backbone, train, budget=20)


def test_a_candidate_scored_on_n_thinned_networks_costs_n_api_calls(api, monkeypatch):
    spec = ThinnedSpec(n_networks=4, clip_rate=0.1)
    forwarded = []
    original = type(api._backbone).label_logits
    def counting(self, batch, prompts=None, extras=None):
        forwarded.append(prompts.shape[0])
        return original(self, batch, prompts, extras)

    monkeypatch.setattr(type(api._backbone), "label_logits", counting)
    logits = api.query(prompts_for(api._backbone, n=3), thinned=spec)
    assert logits.shape == (4, 3, len(SENTENCES), 2)
    assert api.calls == 12 == api.price(3, spec) and forwarded == [12]  # 12 full inferences over the train set
    assert api.price(3) == 3  # the full network: one call per candidate, as in BBT


def test_thinned_calls_past_the_budget_are_refused_and_not_billed(api):
    spec = ThinnedSpec(n_networks=4, clip_rate=0.1)
    api.query(prompts_for(api._backbone, n=4), thinned=spec)
    with pytest.raises(BudgetExhausted):
        api.query(prompts_for(api._backbone, n=2), thinned=spec)  # 8 calls asked, 4 left
    assert api.calls == 16


def test_scoring_dev_or_test_on_thinned_networks_is_free(api):
    spec = ThinnedSpec(n_networks=3, clip_rate=0.1)
    logits = api.score(api._train, prompts_for(api._backbone, n=1)[0], thinned=spec)
    assert logits.shape == (3, len(SENTENCES), 2)
    assert api.calls == 0 and api.eval_calls == 3


def test_ensemble_inference_scores_with_the_thinned_networks_averaged_probabilities(backbones):
    backbone = backbones["minilm"]
    batch, prompt = batch_for(backbone), prompts_for(backbone, n=1)[0]
    spec = ThinnedSpec(n_networks=3, clip_rate=0.2)
    ensemble = ClipTuningSolution(prompt=prompt, thinned=spec).scorer(backbone)(batch)
    expected = thinned_logits(backbone, batch, prompt[None], spec)[:, 0].softmax(-1).mean(0)
    torch.testing.assert_close(ensemble.softmax(-1), expected, atol=1e-6, rtol=1e-5)
    full = ClipTuningSolution(prompt=prompt).scorer(backbone)(batch)
    torch.testing.assert_close(full, backbone.label_logits(batch, prompt[None])[0])
    torch.testing.assert_close(ensemble_logits(torch.stack([full, full])), full.log_softmax(-1), atol=1e-5, rtol=1e-5)


# -- configuration -------------------------------------------------------------------------------------------
def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("model", ["minilm", "roberta_large"])
def test_clip_tuning_reuses_every_bbt_key_and_default(model):
    bbt, clip = compose_cfg("method=bbt", f"model={model}"), compose_cfg("method=clip_tuning", f"model={model}")
    assert {k: v for k, v in clip.method.items() if k in bbt.method and k != "name"} == \
           {k: v for k, v in bbt.method.items() if k != "name"}
    assert clip.optimizer == bbt.optimizer
    assert {"n_networks", "clip_rate", "sites", "mixing", "inference"} <= set(clip.method)
    assert clip.method.inference == "full"


@pytest.mark.parametrize("override, message", [
    ("method.mixing=median", "mixing"), ("method.inference=vote", "inference"), ("method.sites=ffn", "sites"),
    ("method.clip_rate=1.0", "clip_rate"), ("method.n_networks=0", "n_networks"), ("method.budget=3", "budget"),
])
def test_bad_clip_tuning_settings_fail_before_anything_is_loaded(override, message):
    with pytest.raises(ConfigError, match=message):
        plan(compose_cfg("method=clip_tuning", override))  # n_networks defaults to 4


# -- whole runs ----------------------------------------------------------------------------------------------
SMALL_CLIP = ["method=clip_tuning", "method.budget=45", "method.n_networks=2", "method.intrinsic_dim=20",
              "method.n_prompt_tokens=4", "optimizer.popsize=5", "method.eval_every=20", "task=sst2"]


@pytest.fixture
def short_test_split(monkeypatch):
    """The first 32 test examples, so whole runs stay fast (the method never sees the test split)."""
    from prompt_bench.settings.base import Setting

    original = Setting.load

    def load(self, task):
        data = original(self, task)
        data.test = data.test[:32]
        return data

    monkeypatch.setattr(Setting, "load", load)


def test_clip_tuning_runs_end_to_end_billing_n_calls_per_candidate_and_resumes_exactly(mirror, tmp_path,
                                                                                        short_test_split, monkeypatch):
    from prompt_bench.methods import bbt

    budgets = []
    monkeypatch.setattr(bbt, "make_search", lambda cfg, dim, budget, seed, sigma: budgets.append(budget)
                        or make_search(cfg, dim, budget, seed, sigma))
    cfg = make(mirror, *SMALL_CLIP)
    reference = experiment.run(cfg, tmp_path / "reference")
    assert budgets == [22]  # the optimizer is told its budget in candidates (NGOpt sizes itself by it), not calls
    # 45 calls buy 22 candidates at 2 calls each: four generations of 5, one of 2; the last call is left unspent
    assert reference["budget_used"] == 44 and reference["budget_unit"] == "api_calls" and reference["budget"] == 45
    steps = [r["step"] for r in read_metrics(tmp_path / "reference") if "train/loss" in r]
    assert steps == [10, 20, 30, 40, 44]
    info = reference["method_info"]
    assert info["api_calls_per_candidate"] == 2 and info["candidates_scored"] == 22
    assert (info["n_networks"], info["sites"], info["mixing"], info["inference"]) == (2, "both", "mean_loss", "full")
    _, state = load_tensors(tmp_path / "reference" / "checkpoint" / "state")
    assert sum(len(g) for g in state["losses"]) * 2 == reference["budget_used"]
    tensors, meta = load_tensors(tmp_path / "reference" / "prompt.safetensors")
    assert tensors["prompt"].shape == (4, 384) and tensors["z"].shape == (20,) and meta["method"] == "clip_tuning"

    with pytest.MonkeyPatch.context() as patch:
        interrupt_at(patch, 30)
        with pytest.raises(KeyboardInterrupt):
            experiment.run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()
    resumed = experiment.run(cfg, tmp_path / "run")
    assert resumed["test"] == reference["test"] and resumed["budget_used"] == 44
    new, _ = load_tensors(tmp_path / "run" / "prompt.safetensors")
    torch.testing.assert_close(new["prompt"], tensors["prompt"], rtol=0, atol=0)
    assert read_metrics(tmp_path / "run") == read_metrics(tmp_path / "reference")


def test_ensemble_inference_and_mean_prob_mixing_run_on_a_tiny_model(mirror, tmp_path, tiny_models, short_test_split):
    model = ["model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm"]
    results = experiment.run(make(mirror, *SMALL_CLIP, *model, "method.budget=20", "method.inference=ensemble",
                                  "method.mixing=mean_prob", "method.sites=attention"), tmp_path / "run")
    assert results["budget_used"] == 20
    assert results["method_info"]["inference"] == "ensemble" and results["method_info"]["mixing"] == "mean_prob"
    dev = [r for r in read_metrics(tmp_path / "run") if "dev/accuracy" in r]
    assert dev and json.loads((tmp_path / "run" / "results.json").read_text())["dev"]
