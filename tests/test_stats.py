"""Intervals and paired tests from per-example predictions over seeds, checked on seeded simulations whose
truth is known."""

import numpy as np
import pytest

from prompt_bench import stats
from prompt_bench.tasks import metrics


def simulated_method(rng, labels, accuracy, seed_sd, shared=None, n_seeds=3):
    """Predictions of a method whose expected accuracy over seeds is `accuracy`: each seed's true accuracy
    is drawn around it (sd `seed_sd`), and each example is right with that probability. With `shared`
    (one uniform number per example), half the examples' correctness follows a difficulty common to seeds."""
    n = len(labels)
    preds = []
    for seed_accuracy in np.clip(accuracy + seed_sd * rng.standard_normal(n_seeds), 0, 1):
        draw = rng.random(n) if shared is None else np.where(rng.random(n) < 0.5, shared, rng.random(n))
        preds.append(np.where(draw < seed_accuracy, labels, 1 - labels))
    return [stats.Part("accuracy", labels, np.stack(preds), 2)]


@pytest.mark.parametrize("seed_sd", [0.0, 0.06], ids=["test-set-noise-only", "seeds-dominate"])
def test_intervals_cover_the_true_accuracy_at_about_the_nominal_rate(seed_sd):
    rng = np.random.default_rng(7)
    hits = []
    for replicate in range(200):
        labels = rng.integers(0, 2, 300)  # a fresh test set of the task each time
        estimate = stats.interval(simulated_method(rng, labels, 0.7, seed_sd, shared=rng.random(300)),
                                  n_boot=200, seed=replicate)
        hits.append(estimate.low <= 0.7 <= estimate.high)
    assert 0.90 <= np.mean(hits) <= 0.995  # nominal 0.95; a test-set-only bootstrap covers ~0.5 when seeds dominate


def test_the_paired_test_finds_a_planted_difference():
    rng = np.random.default_rng(1)
    labels, shared = rng.integers(0, 2, 500), rng.random(500)
    better = simulated_method(rng, labels, 0.80, 0.01, shared)
    worse = simulated_method(rng, labels, 0.68, 0.01, shared)
    difference = stats.paired(better, worse)
    assert difference.p < 0.01 and 0 < difference.low < 0.12 < difference.high  # the planted 12 points, not 0


def test_the_paired_test_finds_no_difference_between_a_method_and_its_copy():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 500)
    method = simulated_method(rng, labels, 0.75, 0.02)
    same = stats.paired(method, [stats.Part(p.metric, p.labels, p.preds.copy(), 2) for p in method])
    assert same.mean == 0 and same.p == 1.0 and same.low == same.high == 0
    # two independent runs of one method: a false alarm in about 5% of cases, not more
    alarms = []
    for replicate in range(150):
        labels, shared = rng.integers(0, 2, 300), rng.random(300)
        a, b = (simulated_method(rng, labels, 0.7, 0.02, shared) for _ in range(2))
        alarms.append(stats.paired(a, b, n_boot=200, seed=replicate).p < 0.05)
    assert np.mean(alarms) <= 0.08


@pytest.mark.parametrize("metric,n_classes", [("accuracy", 3), ("f1", 2), ("macro_f1", 3), ("matthews", 2),
                                              ("matthews", 4), ("multirc", 2)])
def test_the_resampled_metric_is_the_tasks_own_metric(metric, n_classes):
    rng = np.random.default_rng(3)
    for trial in range(50):
        n = int(rng.integers(1, 40))
        labels, preds = rng.integers(0, n_classes, n), rng.integers(0, n_classes, n)
        if trial % 5 == 0:
            preds[:] = preds[0]  # a constant predictor: sklearn's zero-division conventions
        counts = np.zeros((n_classes, n_classes))
        np.add.at(counts, (labels, preds), 1)
        expected = metrics.compute(metric, preds, labels, [str(i) for i in range(n)])[metrics.primary(metric)]
        assert float(metrics.from_confusion(metric, counts)) == pytest.approx(expected, abs=1e-12)


def test_an_interval_is_centred_on_the_tasks_metric_not_on_accuracy():
    labels = np.array([1] * 30 + [0] * 70)
    preds = np.array([[1] * 15 + [0] * 15 + [1] * 5 + [0] * 65])  # tp 15, fn 15, fp 5, tn 65: accuracy 0.8
    estimate = stats.interval([stats.Part("f1", labels, preds, 2)], n_boot=300)
    assert estimate.mean == pytest.approx(2 * 15 / (2 * 15 + 5 + 15))  # F1 of class 1: 0.6
    assert estimate.low < 0.6 < estimate.high < 0.8


def test_resampling_is_seeded_so_a_report_is_reproducible():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 200)
    method = simulated_method(rng, labels, 0.7, 0.02)
    assert stats.interval(method, seed=5) == stats.interval(method, seed=5)
    assert stats.interval(method, seed=5) != stats.interval(method, seed=6)


def test_multirc_resamples_whole_questions_so_correlated_answers_widen_the_interval():
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(60), 5)  # 60 questions of 5 answers, each question all right or all wrong
    labels = rng.integers(0, 2, 300)
    right = np.repeat(rng.random((1, 60)) < 0.7, 5, axis=1)  # one seed: the interval is the test set's alone
    part = stats.Part("multirc", labels, np.where(right, labels, 1 - labels), 2, groups)
    by_question = stats.interval([part], n_boot=400)
    by_answer = stats.interval([stats.Part("multirc", labels, part.preds, 2)], n_boot=400)
    assert by_question.mean == by_answer.mean and by_question.se > 1.5 * by_answer.se


def test_the_baselines_match_a_hand_count():
    labels = np.array([0, 0, 0, 1, 1, 2, 0, 1])  # class 0 is the majority: 4 of 8
    part = stats.Part("accuracy", labels, labels[None, :], 3)
    assert stats.baselines([part])["majority"] == 4 / 8
    assert stats.baselines([part])["random"] == pytest.approx(1 / 3, abs=0.01)
    mrpc = stats.Part("f1", np.array([1, 1, 1, 0]), np.zeros((1, 4), dtype=int), 2)  # always "equivalent": P=3/4, R=1
    assert stats.baselines([mrpc])["majority"] == pytest.approx(2 * 0.75 / 1.75)
    cola = stats.Part("matthews", np.array([1, 1, 0]), np.zeros((1, 3), dtype=int), 2)
    assert stats.baselines([cola]) == pytest.approx({"majority": 0.0, "random": 0.0}, abs=0.02)
    # a multitask score averages its tasks' baselines
    assert stats.baselines([part, mrpc])["majority"] == pytest.approx((4 / 8 + 2 * 0.75 / 1.75) / 2)


def test_holm_adjusts_p_values_as_by_hand():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([]) == []


def test_mcnemar_counts_only_the_examples_one_method_gets_right():
    labels = np.zeros(30, dtype=int)
    a = np.zeros(30, dtype=int)  # right everywhere
    b = np.array([1] * 10 + [0] * 20)  # wrong on 10
    assert stats.mcnemar(a, b, labels) == pytest.approx(2 * 0.5**10)
    assert stats.mcnemar(a, a, labels) == 1.0


def test_an_interval_stops_at_the_range_the_metric_can_take():
    labels = np.array([0, 1] * 50)
    right, wrong = labels, 1 - labels
    # three seeds far apart, one of them perfect: mean ± t·SE over 2 degrees of freedom would pass 100%
    spread = [stats.Part("accuracy", labels, np.stack([right, right, np.where(np.arange(100) < 60, wrong, right)]), 2)]
    observed, resampled = stats.scores([spread], 200)
    unclipped = stats.estimate(observed[0], resampled[:, 0])
    assert unclipped.high > 1.0
    estimate = stats.interval(spread, n_boot=200)
    assert estimate.high == 1.0 and estimate.low == max(unclipped.low, 0.0) and estimate.mean == unclipped.mean
    # Matthews correlation may go down to -1, and no lower
    anti = [stats.Part("matthews", labels, np.stack([wrong, wrong, np.where(np.arange(100) < 60, right, wrong)]), 2)]
    assert stats.interval(anti, n_boot=200).low == -1.0
