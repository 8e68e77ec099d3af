"""Every run keeps its per-example test and dev predictions and gold labels (predictions.safetensors), so
any later analysis reproduces its scores without a re-run."""

import numpy as np

from prompt_bench import experiment, predictions

from test_experiment import make


def test_a_run_keeps_predictions_that_reproduce_its_test_and_dev_scores(mirror, tmp_path):
    results = experiment.run(make(mirror, "method=manual", "task=cb"), tmp_path / "run")
    kept = predictions.load(tmp_path / "run")
    test, dev = kept["test"]["cb"], kept["dev"]["cb"]
    assert len(test.labels) == results["n_test"] == 56 and len(dev.labels) == results["n_dev"]
    assert test.metric == "macro_f1" and test.n_classes == 3 and test.groups is None
    assert test.scores() == results["test"] and dev.scores() == results["dev"]  # macro-F1 too, not just accuracy
    assert np.bincount(test.labels).tolist() == [23, 28, 5]  # CB validation: entailment, contradiction, neutral


def test_predictions_round_trip_through_safetensors_with_question_groups(tmp_path):
    kept = predictions.Predictions("multirc", np.array([1, 0, 1, 1]), np.array([1, 1, 0, 1]), 2, np.array([0, 0, 1, 1]))
    path = predictions.save(tmp_path, {"test": {"multirc": kept}})
    assert path.name == "predictions.safetensors" and b"pickle" not in path.read_bytes()
    loaded = predictions.load(tmp_path)["test"]["multirc"]
    assert loaded.scores() == kept.scores() and loaded.scores()["em"] == 0.0
    assert loaded.groups.tolist() == [0, 0, 1, 1] and loaded.preds.tolist() == [1, 0, 1, 1]


def test_a_folder_written_before_predictions_were_kept_has_none(tmp_path):
    assert predictions.load(tmp_path) is None
