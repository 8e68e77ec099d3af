"""GDFO: derivative-free search on a black-box teacher, gradient descent through a distilled white-box student."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prompt_bench import experiment
from prompt_bench.artifacts import load_tensors
from prompt_bench.errors import ConfigError
from prompt_bench.methods import gdfo
from prompt_bench.tracking import read_metrics

from test_experiment import make, run_interrupted_then_resumed

SMALL = ["method.budget=40", "method.eval_every=20", "method.intrinsic_dim=16", "method.n_prompt_tokens=3",
         "optimizer.popsize=8", "task=sst2", "method.placeholder_start=200"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def models(tiny_models):
    # teacher: a masked LM (WordPiece); student: a causal LM with another tokenizer and width
    return ["model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm",
            f"method.gdfo.student={tiny_models['causal_lm']}", "method.gdfo.student_family=causal_lm"]


def run(mirror, path, tiny_models, *overrides):
    return experiment.run(make(mirror, "method=gdfo", *models(tiny_models), *SMALL, *overrides), path)


def test_gdfo_spends_exactly_the_bbt_budget_and_distillation_buys_no_extra_calls(mirror, tmp_path, tiny_models):
    results = run(mirror, tmp_path / "run", tiny_models)
    assert results["budget_used"] == 40 and results["budget_unit"] == "api_calls"
    info = results["method_info"]
    assert info["gd_suggestions"] == 4  # 5 generations of 8, the first is the warm-up
    kl = [r["train/distill_kl"] for r in read_metrics(tmp_path / "run") if "train/distill_kl" in r]
    assert len(kl) == 5 and all(np.isfinite(kl))


def test_the_gradient_refined_point_is_the_first_member_of_each_cma_generation_and_every_generation_updates(
        mirror, tmp_path, tiny_models, monkeypatch):
    from prompt_bench.optim.dfo import CMASearch

    asked, injected = [], []
    original_ask, original_inject = CMASearch.ask, CMASearch.inject
    monkeypatch.setattr(CMASearch, "ask", lambda self, n=None: asked.append(original_ask(self, n)) or asked[-1])
    monkeypatch.setattr(CMASearch, "inject", lambda self, z: injected.append(z) or original_inject(self, z))
    results = run(mirror, tmp_path / "run", tiny_models)
    assert len(injected) == 4
    for z, generation in zip(injected, asked[1:]):
        assert len(generation) == 8  # the injected point replaces a sample: a generation keeps popsize members
        np.testing.assert_allclose(generation[0], z)
    # 5 generations of 8 candidates, each told to pycma and each updating its distribution
    assert results["method_info"]["cma_updates"] == 5


def test_with_gradient_descent_off_gdfo_searches_exactly_as_bbt(mirror, tmp_path, tiny_models):
    no_gd = run(mirror, tmp_path / "gdfo", tiny_models, "method.gdfo.gd=false")
    bbt = experiment.run(make(mirror, "method=bbt", *models(tiny_models)[:3], *SMALL), tmp_path / "bbt")
    assert no_gd["method_info"]["gd_suggestions"] == 0 and no_gd["test"] == bbt["test"]
    a, _ = load_tensors(tmp_path / "gdfo" / "prompt.safetensors")
    b, _ = load_tensors(tmp_path / "bbt" / "prompt.safetensors")
    torch.testing.assert_close(a["prompt"], b["prompt"], rtol=0, atol=0)


def test_without_dfo_each_generation_is_the_gradient_refined_prompt_alone(mirror, tmp_path, tiny_models):
    results = run(mirror, tmp_path / "run", tiny_models, "method.budget=6", "method.eval_every=6", "method.gdfo.gd_warmup=0",
                  "method.gdfo.dfo=false")
    assert results["budget_used"] == 6 and results["method_info"]["gd_suggestions"] == 6


def test_distillation_brings_the_student_towards_the_teachers_answers(tiny_models):
    from prompt_bench.methods.base import BlackBoxContext
    from prompt_bench.models import ModelSpec, build_backbone
    from prompt_bench.tasks.spec import Example

    from test_backbones import TASK

    student = build_backbone(ModelSpec.from_config({"name": "s", "family": "causal_lm", "path": str(tiny_models["causal_lm"])}), device="cpu")
    examples = [Example({"sentence": s}, i % 2) for i, s in enumerate(["good film", "bad film", "fine", "awful"])]
    ctx = BlackBoxContext(task=TASK, train=None, dev=None, method={"intrinsic_dim": 8, "alpha": 1.0}, optimizer={}, seed=0,
                          tracker=None, checkpoint=None, evaluation=None, train_examples=examples)
    cfg = {"student_layers": 2, "distill": True, "distill_steps": 1, "distill_prompts": 4, "distill_lr": 1e-2,
           "temperature": 1.0, "seed": 0, "gd_lr": 0.1, "gd_steps": 5}
    s = gdfo.Student(student, ctx, cfg, n_tokens=2, sigma=1.0)
    z = np.random.RandomState(0).randn(4, 8)
    teacher = torch.tensor([[[3.0, -3.0]] * 4] * 4)  # a teacher that always answers class 0
    first = s.distill(z, teacher, 0)
    for generation in range(1, 15):
        last = s.distill(z[:0], teacher[:0], generation)
    assert last < first
    start_loss = torch.nn.functional.cross_entropy(s.logits(torch.tensor(z[:1]))[0].float(), s.train.labels).item()
    _, end_loss = s.descend(z[0])
    assert end_loss < start_loss


def test_an_interrupted_gdfo_run_resumes_to_the_uninterrupted_result(mirror, tmp_path, tiny_models):
    reference = run(mirror, tmp_path / "reference", tiny_models)
    resumed = run_interrupted_then_resumed(lambda folder: run(mirror, folder, tiny_models), tmp_path / "run", at=32)
    assert resumed["test"] == reference["test"]
    a, _ = load_tensors(tmp_path / "reference" / "prompt.safetensors")
    b, _ = load_tensors(tmp_path / "run" / "prompt.safetensors")
    torch.testing.assert_close(a["prompt"], b["prompt"], rtol=0, atol=0)


def test_bad_gdfo_settings_are_refused_before_loading(mirror):
    with pytest.raises(ConfigError, match="both off"):
        experiment.plan(make(mirror, "method=gdfo", "method.gdfo.gd=false", "method.gdfo.dfo=false"))
    with pytest.raises(ConfigError, match="neither a model config"):
        experiment.plan(make(mirror, "method=gdfo", "method.gdfo.student=no_such_model"))


def test_a_student_shallower_than_its_checkpoint_keeps_only_its_bottom_blocks(mirror, tmp_path, tiny_models):
    results = run(mirror, tmp_path / "run", tiny_models, "method.gdfo.student_depth=1", "method.gdfo.student_layers=1")
    assert results["method_info"]["student_blocks"] == 1
    with pytest.raises(ConfigError, match=r"method.gdfo.student_depth=0 must be at least 1"):
        experiment.plan(make(mirror, "method=gdfo", "method.gdfo.student_depth=0"))
