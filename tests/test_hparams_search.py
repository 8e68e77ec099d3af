"""A job returns one number, the selected prompt's dev score, so Hydra's sweepers (Optuna) can search on dev."""

from __future__ import annotations

import json
import pickle

import pytest
import yaml

from prompt_bench.cli import JobValue, objective
from prompt_bench.errors import ConfigError
from test_cli import cli

RESULTS = {"metric": "f1", "dev": {"f1": 0.61, "accuracy": 0.7}, "test": {"f1": 0.5, "accuracy": 0.6}}


def test_the_objective_is_the_dev_score_on_the_tasks_metric_or_on_a_named_dev_metric():
    assert objective(RESULTS, None) == 0.61
    assert objective(RESULTS, "dev/accuracy") == 0.7
    assert objective(RESULTS, "accuracy") == 0.7


def test_a_test_metric_is_never_an_objective():
    with pytest.raises(ConfigError, match="searched on dev, never test: use optimized_metric=dev/accuracy"):
        objective(RESULTS, "test/accuracy")
    with pytest.raises(ConfigError, match="not a dev metric of this run"):
        objective(RESULTS, "dev/bleu")


def test_a_job_value_is_its_number_keeps_its_results_across_processes_and_a_failed_one_has_no_number():
    value = pickle.loads(pickle.dumps(JobValue(0.61, results=RESULTS)))
    assert value == 0.61 and float(value) == 0.61 and value.results == RESULTS
    failed = pickle.loads(pickle.dumps(JobValue(float("nan"), error="bad input")))
    assert failed.error == "bad input"
    with pytest.raises(ValueError, match="the job failed: bad input"):
        float(failed)


def test_an_optuna_search_on_the_cpu_returns_the_best_trial_by_its_dev_score(mirror, tiny_models, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "search"
    done = cli("-m", "hparams_search=bbt_optuna", "hydra.sweeper.n_trials=3", "method.budget=24", "method.eval_every=8",
               "optimizer.popsize=4", "method.n_prompt_tokens=4", "model=local", f"model.path={tiny_models['masked_lm']}",
               "model.family=masked_lm", "setting.k=4", "logger=none", "run.progress=false", f"data.mirror={mirror}",
               f"run.root={tmp_path}", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"method.sigma", "method.intrinsic_dim"}
    trials = [json.loads(p.read_text()) for p in sweep.rglob("results.json")]
    assert len(trials) == 3
    assert best["best_value"] == pytest.approx(max(t["dev"][t["metric"]] for t in trials))
