"""scripts/recycle_grid.py, the Prompt Recycling benchmark: its table carries each mean's 95% interval, the majority
class, and paired comparisons with the zero-shot and random prompts, and its JSON keeps the per-example predictions
they were computed from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prompt_bench import experiment, predictions
from prompt_bench.tasks import metrics

ROOT = Path(__file__).resolve().parents[1]


def recycle_grid():
    sys.path.insert(0, str(ROOT / "scripts"))
    import recycle_grid

    return recycle_grid


def flip(labels: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The labels with a random `share` of them changed to the other class."""
    wrong = rng.random(len(labels)) < share
    return np.where(wrong, 1 - labels, labels)


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.6).astype(np.int64)  # 60% class 1: the majority class scores 0.6
    manual = flip(labels, 0.45, rng)  # zero-shot: about 55% right
    gold = predictions.Predictions("accuracy", manual, labels, 2)  # the zero-shot prompt's predictions, with the labels
    good = np.stack([flip(labels, 0.1, rng) for _ in range(5)])  # recycled: about 90% right, 5 source seeds
    randoms = np.stack([flip(labels, 0.5, rng) for _ in range(5)])
    return labels, gold, manual, good, randoms


def test_a_planted_gain_over_the_zero_shot_prompt_is_found_with_its_interval(planted):
    labels, gold, manual, good, randoms = planted
    found = recycle_grid().uncertainty(gold, {"v2v_lin": good}, randoms, None)
    cell = found["recyclers"]["v2v_lin"]
    own = np.mean([np.mean(row == labels) for row in good])  # rebuilt by hand: mean accuracy over the seeds
    assert cell["score"]["mean"] == pytest.approx(own)
    assert cell["score"]["low"] < own < cell["score"]["high"]
    gain = own - np.mean(manual == labels)
    assert cell["vs_manual"]["mean"] == pytest.approx(gain)
    assert cell["vs_manual"]["low"] > 0 and cell["vs_manual"]["p"] < 1e-3
    assert cell["vs_random"]["low"] > 0 and cell["vs_majority"]["low"] > 0


def test_recycled_prompts_that_answer_like_the_zero_shot_prompt_differ_by_nothing(planted):
    labels, gold, manual, _, randoms = planted
    copies = np.repeat(manual[None], 5, axis=0)
    cell = recycle_grid().uncertainty(gold, {"lin_comb": copies}, randoms, None)["recyclers"]["lin_comb"]
    assert cell["vs_manual"]["mean"] == 0 and cell["vs_manual"]["p"] == 1.0


def test_the_majority_class_is_the_share_of_the_most_frequent_label(planted):
    labels, gold, manual, good, randoms = planted
    found = recycle_grid().uncertainty(gold, {"v2v_lin": good}, randoms, good[:2])
    assert found["baselines"]["majority"] == pytest.approx(np.bincount(labels).max() / len(labels))
    assert found["baselines"]["random"] == pytest.approx(0.5, abs=0.01)
    assert found["tuned_on_target"]["mean"] == pytest.approx(np.mean([np.mean(r == labels) for r in good[:2]]))


def test_each_kind_of_comparison_is_holm_adjusted_over_the_whole_table():
    module = recycle_grid()
    cell = lambda p: {"mean": 0.1, "low": 0.0, "high": 0.2, "p": p}  # noqa: E731
    tasks = {task: {"uncertainty": {"recyclers": {name: {kind: cell(p) for kind in ("vs_manual", "vs_random", "vs_majority")}
                                                  for name, p in zip(("a", "b"), ps)}}}
             for task, ps in (("sst2", (0.01, 0.04)), ("cola", (0.02, 0.5)))}
    module.adjust(tasks)
    adjusted = [tasks[t]["uncertainty"]["recyclers"][n]["vs_manual"]["p_holm"] for t in ("sst2", "cola") for n in "ab"]
    # four p-values in one family: 0.01 x 4, 0.02 x 3, 0.04 x 2, 0.5 x 1 (kept monotone)
    assert adjusted == pytest.approx([0.04, 0.08, 0.06, 0.5])


@pytest.fixture(scope="module")
def grid_run(mirror, tiny_models, tmp_path_factory):
    """Two tiny prompt tuning runs on a WordPiece masked LM, recycled to a byte-level BPE causal LM."""
    from hydra import compose, initialize_config_dir

    from prompt_bench.cli import CONF_DIR

    root = tmp_path_factory.mktemp("recycle_grid")
    for seed in (13, 21):
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            cfg = compose(config_name="config", overrides=[
                f"data.mirror={mirror}", "setting=few_shot", "setting.k=4", "logger=none", "run.progress=false",
                "compute.bf16=false", "method=prompt_tuning", "task=sst2", "model=local",
                f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm", "method.n_prompt_tokens=4",
                "method.max_steps=2", "method.eval_every=1", "method.batch_size=4", f"seed={seed}"])
        experiment.run(cfg, root / "sources" / f"seed{seed}")
    out = root / "grid.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "recycle_grid.py"), str(root / "sources"),
                           "--target", "local", "--target-path", str(tiny_models["causal_lm"]), "--target-family",
                           "causal_lm", "--n-words", "12", "--word-skip", "0", "--n-heldout", "4", "--nn-epochs", "2",
                           "--limit-test", "40", "--mirror", str(mirror), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_the_table_prints_intervals_the_majority_class_and_the_paired_differences(grid_run):
    stdout, report = grid_run
    table = [line for line in stdout.splitlines() if line.startswith("|")]
    assert "[95% CI]" in table[0] and "majority class" in table[0] and "p (Holm)" in table[0]
    assert len(table) == 2 + 3  # header, rule, one row per recycler
    assert "95% CI = mean ± t·SE" in stdout


def test_the_json_keeps_the_predictions_every_figure_is_computed_from(grid_run):
    _, report = grid_run
    task = report["tasks"]["sst2"]
    labels = np.array(task["labels"])
    assert len(labels) == 40 and len(task["manual_preds"]) == 40
    assert metrics.compute("accuracy", task["manual_preds"], labels)["accuracy"] == pytest.approx(task["manual"])
    for name, cell in task["uncertainty"]["recyclers"].items():
        rows = [p["recycled_preds"][name] for p in task["prompts"]]
        by_hand = np.mean([metrics.compute("accuracy", row, labels)["accuracy"] for row in rows])
        assert cell["score"]["mean"] == pytest.approx(by_hand) == pytest.approx(task["recyclers"][name]["mean"])
        assert 0 <= cell["vs_manual"]["p_holm"] <= 1
    assert task["uncertainty"]["baselines"]["majority"] == pytest.approx(np.bincount(labels).max() / len(labels))
