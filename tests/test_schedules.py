"""Learning-rate schedules and gradient clipping (conf/optimizer: schedule, warmup_steps, max_grad_norm) in the
training loop every gradient method shares: each update is rebuilt here by hand (the softmax gradient, the clipped
gradient, Adam's moments and the warm-up / decay factor), independently of torch's and transformers' code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prompt_bench import experiment
from prompt_bench.batching import EncodedSplit
from prompt_bench.checkpoint import Checkpoint
from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import Evaluation, WhiteBoxContext
from prompt_bench.methods.training import train
from prompt_bench.tracking import read_metrics

from test_experiment import make, run_interrupted_then_resumed

LABELS = [0, 1, 2, 0, 2, 2]
SCALE = 30.0  # logits = SCALE * w: the gradient's norm is well above the clipping norm used below


class Recorder:
    """A tracker that keeps every record and a copy of the parameters after each training step."""

    def __init__(self, params):
        self.params, self.records, self.after = params, [], []

    def log(self, record, step):
        self.records.append((step, dict(record)))
        if "train/loss" in record:
            self.after.append({k: v.detach().clone() for k, v in self.params.items()})


def fit(tmp_path, optimizer: dict, steps: int = 8, w0=(0.3, -0.2, 0.1)):
    """Train one 3-class logit vector w (every example's logits are SCALE * w) through `train`."""
    n = len(LABELS)
    split = EncodedSplit(ids=[[1, 2]] * n, target=[0] * n, labels=LABELS, groups=[None] * n, pad_id=0,
                         device=torch.device("cpu"))
    w = torch.tensor(w0, requires_grad=True)
    recorder = Recorder({"w": w})
    ctx = WhiteBoxContext(task=None, train=split, dev=split,
                          method={"lr": optimizer["lr"], "weight_decay": optimizer["weight_decay"]}, optimizer=optimizer,
                          seed=0, tracker=recorder, checkpoint=Checkpoint(tmp_path),
                          evaluation=Evaluation(dev=lambda scorer: {"accuracy": 0.0}, metric="accuracy"))
    train(ctx, {"w": w}, lambda batch: SCALE * w.expand(len(batch), -1), max_steps=steps, batch_size=n, eval_every=steps)
    return recorder


def expected(optimizer: dict, steps: int = 8, w0=(0.3, -0.2, 0.1)):
    """The same training by hand, in float64: AdamW (weight decay 0) with the schedule's factor and clipping."""
    lr, warmup, schedule = optimizer["lr"], optimizer.get("warmup_steps", 0), optimizer.get("schedule", "constant")
    max_norm = optimizer.get("max_grad_norm")
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    w = np.array(w0, dtype=np.float64)
    m, v = np.zeros(3), np.zeros(3)
    onehot = np.eye(3)[LABELS]
    weights, rates = [], []
    for k in range(steps):  # k: optimizer steps taken before this one
        if schedule == "constant":
            factor = 1.0
        elif k < warmup:
            factor = k / warmup
        elif schedule == "constant_with_warmup":
            factor = 1.0
        else:  # linear: from 1 at the end of warm-up down to 0 at the last step
            factor = max(0.0, (steps - k) / (steps - warmup))
        logits = SCALE * w
        p = np.exp(logits - logits.max())
        p /= p.sum()
        grad = SCALE * (p[None, :] - onehot).mean(0)  # d mean-CE / dw
        if max_norm is not None:
            grad = grad * min(1.0, max_norm / (np.linalg.norm(grad) + 1e-6))
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        t = k + 1
        step_lr = lr * factor
        w = w - step_lr / (1 - beta1**t) * m / (np.sqrt(v) / math.sqrt(1 - beta2**t) + eps)
        weights.append(w.copy())
        rates.append(step_lr)
    return weights, rates


ADAMW = {"name": "adamw", "kind": "gradient", "lr": 0.05, "weight_decay": 0.0}


@pytest.mark.parametrize("settings", [
    {"schedule": "linear", "warmup_steps": 3},
    {"schedule": "constant_with_warmup", "warmup_steps": 3},
    {"max_grad_norm": 0.5},
    {"schedule": "linear", "warmup_steps": 2, "max_grad_norm": 0.5},
], ids=["linear-warmup", "constant-warmup", "clip", "linear-warmup-clip"])
def test_each_update_is_the_one_the_schedule_and_clipping_formulas_give(tmp_path, settings):
    optimizer = {**ADAMW, **settings}
    recorder = fit(tmp_path, optimizer)
    weights, rates = expected(optimizer)
    for step, (ours, theirs) in enumerate(zip(recorder.after, weights)):
        np.testing.assert_allclose(ours["w"].double().numpy(), theirs, rtol=0, atol=2e-6, err_msg=f"step {step + 1}")
    if "schedule" in settings:
        logged = [r["train/lr"] for _, r in recorder.records if "train/lr" in r]
        np.testing.assert_allclose(logged, rates, rtol=1e-12, atol=0)
        assert logged[0] == 0.0  # warm-up starts from 0: the first update moves nothing
        torch.testing.assert_close(recorder.after[0]["w"], torch.tensor([0.3, -0.2, 0.1]), rtol=0, atol=0)
    if "max_grad_norm" in settings:
        norms = [r["train/grad_norm"] for _, r in recorder.records if "train/grad_norm" in r]
        assert len(norms) == 8 and norms[0] > settings["max_grad_norm"]  # the clipping did bite


def test_the_formulas_tell_the_settings_apart(tmp_path):
    """The hand-built reference is not blind to what it checks: each setting changes the trajectory."""
    plain = expected(ADAMW)[0][-1]
    for settings in ({"schedule": "linear", "warmup_steps": 3}, {"max_grad_norm": 0.5}):
        assert np.abs(expected({**ADAMW, **settings})[0][-1] - plain).max() > 1e-3
    # and without a schedule or clipping the loop is plain AdamW, as before schedules existed
    recorder = fit(tmp_path, ADAMW)
    np.testing.assert_allclose(recorder.after[-1]["w"].double().numpy(), plain, rtol=0, atol=2e-6)
    assert not any("train/lr" in r or "train/grad_norm" in r for _, r in recorder.records)


@pytest.mark.parametrize("bad, message", [
    ("optimizer.schedule=step", "optimizer.schedule=step"),
    ("optimizer.warmup_steps=10", "constant_with_warmup"),
    ("optimizer.max_grad_norm=0", "max_grad_norm"),
])
def test_bad_schedule_settings_are_refused_before_loading(mirror, bad, message):
    with pytest.raises(ConfigError, match=message):
        experiment.plan(make(mirror, "method=prompt_tuning", bad))


def test_a_run_with_warm_up_decay_and_clipping_resumes_to_the_uninterrupted_result(mirror, tmp_path):
    overrides = ["method=prompt_tuning", "task=cb", "method.n_prompt_tokens=4", "method.max_steps=10",
                 "method.eval_every=5", "method.batch_size=4", "optimizer.schedule=linear", "optimizer.warmup_steps=3",
                 "optimizer.max_grad_norm=0.1"]

    def run(folder):
        return experiment.run(make(mirror, *overrides), folder)

    reference = run(tmp_path / "reference")
    resumed = run_interrupted_then_resumed(run, tmp_path / "run", at=8)
    assert resumed["test"] == reference["test"]
    assert read_metrics(tmp_path / "run") == read_metrics(tmp_path / "reference")
    rates = [r["train/lr"] for r in read_metrics(tmp_path / "reference") if "train/lr" in r]
    np.testing.assert_allclose(rates, [0.01 * f for f in (0, 1 / 3, 2 / 3, 1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7)],
                               rtol=1e-12)


def test_transformers_adafactor_takes_fixed_steps_of_lr_times_the_clipped_normalised_gradient(tmp_path):
    """optimizer.implementation=transformers (T5X / DPT): at step 1 the second-moment estimate is g^2 (beta2_1 = 0),
    so the update is lr * g / |g| = lr * sign(g), whose RMS is 1 (Adafactor's own update clipping at 1.0 leaves
    it); no relative step, no parameter scaling. torch's Adafactor scales by the parameter's RMS instead."""
    optimizer = {"name": "adafactor", "kind": "gradient", "lr": 0.3, "weight_decay": 0.0, "implementation": "transformers"}
    w0 = np.array([0.3, -0.2, 0.1])
    logits = SCALE * w0
    p = np.exp(logits - logits.max())
    p /= p.sum()
    grad = SCALE * (p[None, :] - np.eye(3)[LABELS]).mean(0)
    recorder = fit(tmp_path / "hf", optimizer, steps=1)
    np.testing.assert_allclose(recorder.after[0]["w"].double().numpy(), w0 - 0.3 * np.sign(grad), rtol=0, atol=1e-6)
    torch_run = fit(tmp_path / "torch", {**optimizer, "implementation": "torch"}, steps=1)
    assert np.abs(torch_run.after[0]["w"].double().numpy() - (w0 - 0.3 * np.sign(grad))).max() > 1e-2
