"""Dynamic Prompting: per-instance position, length and representation of a soft prompt, each switchable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prompt_bench import experiment
from prompt_bench.artifacts import load_tensors
from prompt_bench.errors import ConfigError
from prompt_bench.methods.dynamic_prompting import DynamicPromptSolution, PooledCache, dynamic_scorer
from prompt_bench.methods.p_tuning_v2 import prefix_scorer
from prompt_bench.models.prefixes import enable_prefixes
from prompt_bench.prompts.dynamic import Choices, DynamicPrompt, arrange, temperature
from prompt_bench.tracking import read_metrics

from test_backbones import backbone_for, batch_for
from test_experiment import make, run_interrupted_then_resumed

TINY_DP = ["method=dynamic_prompting", "method.n_prompt_tokens=3", "method.pool_size=2", "method.max_steps=6",
           "method.eval_every=3", "method.batch_size=4", "task=cb"]


def one_hot(index, n):
    return F.one_hot(torch.tensor(index), n).float()


def test_the_split_puts_the_prompts_tail_before_the_input_and_its_head_before_the_last_token():
    # two rows: real lengths 5 and 3 (right-padded to 5); prompt of 3 tokens; offset 1 (after [CLS])
    embeds = torch.arange(10.0).view(2, 5, 1) + 100  # input token values 100.. / 105..
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    prompts = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]).unsqueeze(-1)
    choices = Choices(prompts, split=one_hot([0, 2], 4), length=one_hot([3, 3], 4))
    out, new_mask, target, prompt_mask = arrange(embeds, mask, torch.tensor([3, 1]), choices, offset=1)
    assert out[0, :, 0].tolist() == [100, 1, 2, 3, 101, 102, 103, 104]  # split 0: all before the input
    # split 2: tokens 2.. before, tokens 0..1 before the last real token (106); padding stays at the end
    assert out[1, :, 0].tolist() == [105, 3, 106, 1, 2, 107, 108, 109]
    assert new_mask[1].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert prompt_mask[1].tolist() == [False, True, False, True, True, False, False, False]
    assert target.tolist() == [6, 2]  # row 0: 3 + 3 before; row 1: 1 + 1 before


def test_a_shorter_length_hides_and_zeroes_the_prompts_last_tokens():
    embeds, mask = torch.ones(1, 4, 1) * 100, torch.ones(1, 4, dtype=torch.long)
    choices = Choices(torch.tensor([[[1.0], [2.0], [3.0]]]), split=one_hot([0], 4), length=one_hot([1], 4))
    out, new_mask, _, _ = arrange(embeds, mask, torch.tensor([2]), choices, offset=1)
    assert out[0, :, 0].tolist() == [100, 1, 0, 0, 100, 100, 100]
    assert new_mask[0].tolist() == [1, 1, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("family", ["masked_lm", "causal_lm", "sentence_encoder"])
@torch.no_grad()
def test_with_every_choice_off_dynamic_prompting_is_prompt_tuning(tiny_models, family):
    backbone = backbone_for(family, tiny_models)
    batch = batch_for(backbone, prompt_len=3)
    pool = torch.randn(2, 3, backbone.hidden_size) * 0.1
    dynamic = DynamicPrompt(pool, backbone.hidden_size, "off", "off", "off")
    scored = dynamic_scorer(backbone, dynamic, "shallow", None, PooledCache(backbone), lambda s: 1.0)(batch)
    torch.testing.assert_close(scored, backbone.label_logits(batch, pool[:1])[0], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_deep_with_every_choice_off_is_p_tuning_v2_with_the_pools_prefix(tiny_models):
    backbone = backbone_for("masked_lm", tiny_models)
    shape = enable_prefixes(backbone)
    batch = batch_for(backbone, prompt_len=0)
    pool = torch.randn(1, 3, shape.n_layers, 2, shape.kv_dim)  # [K, L, layers, 2, kv]
    dynamic = DynamicPrompt(pool, backbone.hidden_size, "off", "off", "off")
    scored = dynamic_scorer(backbone, dynamic, "deep", None, PooledCache(backbone), lambda s: 1.0)(batch)
    reference = prefix_scorer(backbone, lambda: pool[0].permute(1, 2, 0, 3), None)(batch)
    torch.testing.assert_close(scored, reference, rtol=1e-4, atol=1e-5)


def test_training_gradients_reach_the_pool_and_all_three_instance_selectors(minilm_backbone):
    batch = batch_for(minilm_backbone, prompt_len=4)
    dynamic = DynamicPrompt(torch.randn(3, 4, 384) * 0.05, 384, "instance", "instance", "instance")
    score = dynamic_scorer(minilm_backbone, dynamic, "shallow", None, PooledCache(minilm_backbone), lambda s: 1.0)
    torch.manual_seed(0)
    F.cross_entropy(score(batch, 0), batch.labels).backward()
    for name, param in dynamic.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_instance_choices_depend_on_the_input_and_task_choices_do_not():
    pooled = torch.randn(6, 8)
    instance = DynamicPrompt(torch.randn(2, 3, 8), 8, "instance", "instance", "instance")
    task = DynamicPrompt(torch.randn(2, 3, 8), 8, "task", "task", "task")
    with torch.no_grad():
        instance.position.layer.weight.normal_(0, 5)
        instance.mixer.layer.weight.normal_(0, 5)
        task.position.logits.normal_(0, 5)
    chosen = instance(pooled, 1.0, sample=False)
    assert len(set(chosen.split.argmax(-1).tolist())) > 1
    assert not torch.allclose(chosen.prompts[0], chosen.prompts[1])
    fixed = task(pooled, 1.0, sample=False)
    assert len(set(fixed.split.argmax(-1).tolist())) == 1 and torch.allclose(fixed.prompts[0], fixed.prompts[5])


def test_the_temperature_anneals_from_its_start_to_its_floor_and_stays_there():
    taus = [temperature(step, 1.0, 0.5, 3e-6) for step in range(0, 2000, 10)]
    assert taus[0] == 1.0 and min(taus) == 0.5 and taus[-1] == 0.5
    assert all(a >= b for a, b in zip(taus, taus[1:]))


def test_dynamic_prompting_runs_resumes_and_its_saved_artifact_reproduces_the_test_score(mirror, tmp_path, minilm_backbone):
    reference = experiment.run(make(mirror, *TINY_DP), tmp_path / "reference")
    assert reference["budget_used"] == 6 and reference["method_info"]["modes"] == ["instance"] * 3
    resumed = run_interrupted_then_resumed(lambda folder: experiment.run(make(mirror, *TINY_DP), folder), tmp_path / "run", at=5)
    assert resumed["test"] == reference["test"]
    tensors, meta = load_tensors(tmp_path / "reference" / "prompt.safetensors")
    assert tensors["dynamic.pool"].shape == (2, 3, 384)
    from omegaconf import OmegaConf

    from prompt_bench.batching import encode_split
    from prompt_bench.evaluation import score_split
    from prompt_bench.tasks import loading
    from prompt_bench.tasks.spec import TaskSpec

    task = TaskSpec.from_config(OmegaConf.to_container(make(mirror, *TINY_DP).task, resolve=True))
    test = encode_split(loading.load_split(task, "test", mirror).examples, task, minilm_backbone, 3)
    solution = DynamicPromptSolution(prompt=None, tensors=tensors, meta=reference["method_info"])
    assert score_split(solution.scorer(minilm_backbone), test, task.metric, 16)[task.metric] == pytest.approx(
        reference["test"][task.metric], abs=1e-6)


@pytest.mark.parametrize("ablation", ["method.dp.position=off", "method.dp.length=task", "method.dp.representation=off"])
def test_each_component_is_one_override_and_runs(mirror, tmp_path, ablation):
    results = experiment.run(make(mirror, *TINY_DP, "method.max_steps=2", "method.eval_every=2", ablation), tmp_path / "run")
    key, value = ablation.split(".")[-1].split("=")
    assert results["method_info"]["modes"][["position", "length", "representation"].index(key)] == value


def test_deep_dynamic_prompting_runs_with_a_linear_head(mirror, tmp_path, tiny_models):
    model = ["model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm"]
    results = experiment.run(make(mirror, *model, *TINY_DP, "method.base=deep", "method.dp.position=off",
                                  "method.head=linear"), tmp_path / "run")
    tensors, _ = load_tensors(tmp_path / "run" / "prompt.safetensors")
    assert tensors["dynamic.pool"].dim() == 5 and "head.weight" in tensors and results["budget_used"] == 6


def test_deep_prompts_have_no_position_to_choose(mirror):
    with pytest.raises(ConfigError, match="dp.position=off"):
        experiment.plan(make(mirror, *TINY_DP, "method.base=deep"))


def test_the_evaluation_shortcut_arranges_exactly_like_the_differentiable_path():
    torch.manual_seed(0)
    embeds, mask = torch.randn(3, 6, 4), torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 3 + [0] * 3])
    logits = torch.randn(3, 4, requires_grad=True)
    split = F.gumbel_softmax(logits, tau=1.0, hard=True)
    choices = Choices(torch.randn(3, 3, 4), split=split, length=one_hot([3, 2, 1], 4))
    with_grad = arrange(embeds, mask, torch.tensor([2, 2, 1]), choices, offset=1)
    with torch.no_grad():
        shortcut = arrange(embeds, mask, torch.tensor([2, 2, 1]), choices, offset=1)
    for a, b in zip(with_grad, shortcut):
        torch.testing.assert_close(a.detach(), b)


@torch.no_grad()
def test_dpts_representation_selector_is_linear_then_tanh_then_softmax():
    """method.dp.pool_selector=linear_tanh: the pool weights of Xianjun-Yang/DPT's soft_ins_vec_adaptive.py
    (nn.Linear(dim, k) -> nn.Tanh() -> softmax over the k prompts), rebuilt here from the layer's weights."""
    pooled = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    pool = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1))
    tanh = DynamicPrompt(pool, 8, "off", "off", "instance", pool_selector="linear_tanh")
    plain = DynamicPrompt(pool, 8, "off", "off", "instance")
    tanh.mixer.layer.weight.normal_(0, 2.0)
    plain.mixer.layer.load_state_dict(tanh.mixer.layer.state_dict())
    layer = tanh.mixer.layer
    weights = torch.softmax(torch.tanh(pooled @ layer.weight.T + layer.bias), dim=-1)  # [B, K]
    expected = (weights[:, :, None, None] * pool[None]).sum(1)
    torch.testing.assert_close(tanh(pooled, 1.0, sample=False).prompts, expected, rtol=1e-5, atol=1e-6)
    # without the Tanh (DPT's position + representation code, our default) the mixture differs
    untamed = torch.softmax(pooled @ layer.weight.T + layer.bias, dim=-1)
    torch.testing.assert_close(plain(pooled, 1.0, sample=False).prompts, (untamed[:, :, None, None] * pool[None]).sum(1),
                               rtol=1e-5, atol=1e-6)
    assert (tanh(pooled, 1.0, sample=False).prompts - plain(pooled, 1.0, sample=False).prompts).abs().max() > 1e-3
    with pytest.raises(ValueError, match="pool_selector"):
        DynamicPrompt(pool, 8, "off", "off", "instance", pool_selector="tanh")


DPT_RECIPE = ["method.dp.pool_selector=linear_tanh", "method.init=uniform", "method.model_dropout=true",
              "method.temperature.every=4", "task.style=dpt", "optimizer=adafactor", "optimizer.implementation=transformers",
              "method.lr=0.3", "method.weight_decay=0", "optimizer.schedule=constant_with_warmup",
              "optimizer.warmup_steps=2", "optimizer.max_grad_norm=1.0"]


def test_dpts_recipe_runs_resumes_and_its_artifact_scores_with_the_tanh_selector(mirror, tmp_path, minilm_backbone):
    def run(folder):
        return experiment.run(make(mirror, *TINY_DP, *DPT_RECIPE), folder)

    reference = run(tmp_path / "reference")
    assert reference["method_info"]["pool_selector"] == "linear_tanh"
    rates = [r["train/lr"] for r in read_metrics(tmp_path / "reference") if "train/lr" in r]
    assert rates == [0.0, 0.15, 0.3, 0.3, 0.3, 0.3]  # 2 constant warm-up steps, then lr 0.3
    resumed = run_interrupted_then_resumed(run, tmp_path / "run", at=5)
    assert resumed["test"] == reference["test"]
    assert {"accuracy", "macro_f1"} <= set(reference["test"])  # CB: DPT's metric beside ours
    tensors, _ = load_tensors(tmp_path / "reference" / "prompt.safetensors")
    from omegaconf import OmegaConf

    from prompt_bench.batching import encode_split
    from prompt_bench.evaluation import score_split
    from prompt_bench.tasks import loading
    from prompt_bench.tasks.spec import TaskSpec

    task = TaskSpec.from_config(OmegaConf.to_container(make(mirror, *TINY_DP, "task.style=dpt").task, resolve=True))
    assert task.verbalizer == ("yes", "no", "maybe") and task.selection_metric == "accuracy"
    test = encode_split(loading.load_split(task, "test", mirror).examples, task, minilm_backbone, 3)
    solution = DynamicPromptSolution(prompt=None, tensors=tensors, meta=reference["method_info"])
    assert score_split(solution.scorer(minilm_backbone), test, task.metric, 16) == pytest.approx(reference["test"], abs=1e-6)
    untamed = DynamicPromptSolution(prompt=None, tensors=tensors, meta={**reference["method_info"], "pool_selector": "linear"})
    batch = test.batch(list(range(16)))
    with torch.no_grad():
        assert (solution.scorer(minilm_backbone)(batch) - untamed.scorer(minilm_backbone)(batch)).abs().max() > 0
