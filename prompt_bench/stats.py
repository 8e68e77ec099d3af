"""How sure a score is, and whether two methods really differ, from per-example predictions over seeds.

A method's score on a task is the mean over seeds of the task's metric on the test set. It varies with the
seed (which few-shot examples were drawn, the search's randomness) and with the test set (a finite sample of
the task). The 95% interval accounts for both:

    score ± t · SE,   SE² = between-seed variance / seeds + test-set variance

* test-set variance: a bootstrap over test examples (`BOOTSTRAP` resamples, seeded, so deterministic),
  the same resampled examples for every seed, with the task's own metric recomputed on each resample
  (metrics.from_confusion, equal to metrics.compute); MultiRC resamples questions, as its answers come in
  groups;
* between-seed variance: the seeds' sample variance less the part of it that test-set resampling explains
  (each seed is scored on the same finite test set), floored at 0;
* t: Student's t with Welch-Satterthwaite degrees of freedom (seeds - 1 when the seeds dominate, normal
  when the test set does). A bootstrap over 3 seeds would be far too narrow, hence t for that part.
* the interval is cut at the range the metric can take ([0, 1], Matthews [-1, 1]; a multitask mean, the mean
  of its tasks' ranges): with 3 seeds far apart near a bound, mean ± t·SE would pass it.

A paired comparison of methods A and B (the same task, test set and seeds) is the same estimate on the
per-seed differences A - B, with both methods scored on the same resampled examples; its two-sided p-value
is that of t = difference / SE. `holm` adjusts a family of p-values for multiple comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as scipy_stats

from prompt_bench.tasks import metrics

BOOTSTRAP = 1000
SEED = 0
LEVEL = 0.95

def describe(n_boot: int = BOOTSTRAP) -> str:
    """How the intervals and tests are computed, in one paragraph for a report."""
    return ("95% CI = mean ± t·SE over seeds and test examples: SE² = between-seed variance / seeds (the seeds' "
            "sample variance less what test-set resampling explains) + the variance of the seed mean over a "
            f"bootstrap of the test examples ({n_boot} seeded resamples, the same examples for every seed, the "
            "task's own metric recomputed on each; MultiRC resamples questions); t with Welch-Satterthwaite "
            "degrees of freedom, the interval cut at the metric's range. Paired tests: the same on per-seed differences (seeds paired, both methods on "
            "the same resampled examples), two-sided p from t, Holm-adjusted within each family of comparisons.")


@dataclass
class Part:
    """One task's test set under one method: gold labels [N] and one row of predictions per seed [S, N].
    A multitask score (the mean of several tasks' metrics) has one Part per task."""

    metric: str  # the task's metric, as metrics.compute takes it
    labels: np.ndarray  # [N]
    preds: np.ndarray  # [S, N]
    n_classes: int = 0
    groups: np.ndarray | None = None  # [N] question ids: resampled together

    @property
    def classes(self) -> int:
        return int(max(self.n_classes, self.labels.max() + 1, self.preds.max() + 1, 2))


@dataclass
class Estimate:
    mean: float
    low: float
    high: float
    se: float
    df: float
    p: float  # two-sided, against a true value of 0 (what a difference is tested against)
    p_holm: float | None = None  # p adjusted within its family of comparisons (set by the caller)


def _confusions(part_of_each: list[Part], n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Confusion counts of every method and seed, on the test set ([M, S, C, C]) and on `n_boot` resamples of
    it ([n_boot, M, S, C, C]). The methods' Parts share labels and groups, so they are resampled together."""
    first = part_of_each[0]
    classes = max(p.classes for p in part_of_each)
    preds = np.stack([p.preds for p in part_of_each])  # [M, S, N]
    m, s, n = preds.shape
    cells = (first.labels * classes + preds).reshape(m * s, n)  # each example's cell in each confusion matrix
    # A resampling unit (an example, or a question's answers) adds counts to every matrix; units with the
    # same counts are interchangeable, so the bootstrap draws how many of each kind (a multinomial).
    unit = np.arange(n) if first.groups is None else np.unique(first.groups, return_inverse=True)[1]
    n_units = int(unit.max()) + 1
    if first.groups is None:
        kinds, per_kind = np.unique(cells.T, axis=0, return_counts=True)  # [K, M*S]
        contributions = np.zeros((len(kinds), m * s, classes * classes))
        np.put_along_axis(contributions, kinds[:, :, None], 1.0, axis=2)
    else:
        per_unit = np.zeros((n_units, m * s, classes * classes))
        np.add.at(per_unit, (unit[:, None], np.arange(m * s)[None, :], cells.T), 1.0)
        kinds, per_kind = np.unique(per_unit.reshape(n_units, -1), axis=0, return_counts=True)
        contributions = kinds.reshape(len(kinds), m * s, classes * classes)
    contributions = contributions.reshape(len(kinds), -1)
    weights = rng.multinomial(n_units, per_kind / n_units, size=n_boot)  # [B, K]
    shape = (m, s, classes, classes)
    observed = (per_kind @ contributions).reshape(shape)
    resampled = (weights @ contributions).reshape((n_boot, *shape))
    return observed, resampled


def scores(parts_of_each: list[list[Part]], n_boot: int = BOOTSTRAP, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Each method's score per seed: the mean over its Parts of the Part's metric, on the test set ([M, S])
    and on each bootstrap resample ([n_boot, M, S]). parts_of_each[i] is method i's list of Parts."""
    rng = np.random.default_rng(seed)
    observed, resampled = 0.0, 0.0
    n_parts = len(parts_of_each[0])
    for index in range(n_parts):
        part_of_each = [parts[index] for parts in parts_of_each]
        check_paired(part_of_each)
        counts, boot_counts = _confusions(part_of_each, n_boot, rng)
        metric = part_of_each[0].metric
        observed = observed + metrics.from_confusion(metric, counts) / n_parts
        resampled = resampled + metrics.from_confusion(metric, boot_counts) / n_parts
    return np.asarray(observed), np.asarray(resampled)


def check_paired(part_of_each: list[Part]) -> None:
    first = part_of_each[0]
    for other in part_of_each[1:]:
        if other.preds.shape != first.preds.shape or not np.array_equal(other.labels, first.labels):
            raise ValueError("paired parts need the same test examples (labels) and the same number of seeds")


def estimate(observed: np.ndarray, resampled: np.ndarray, level: float = LEVEL) -> Estimate:
    """The interval described in the module docstring, from one score per seed on the test set ([S]) and
    on each bootstrap resample ([B, S])."""
    n_seeds = len(observed)
    mean = float(observed.mean())
    test_set_var = float(resampled.mean(1).var(ddof=1))
    seeds_var, between = 0.0, 0.0
    if n_seeds > 1:
        # E[seeds' sample variance] = between-seed variance + the test-set noise in it, estimated by resampling
        seeds_var = float(observed.var(ddof=1))
        noise = float((resampled - observed).var(axis=1, ddof=1).mean())
        between = max(seeds_var - noise, 0.0)
    variance = between / n_seeds + test_set_var
    # Satterthwaite: the seeds' sample variance is the one estimate with few (seeds - 1) degrees of freedom
    df = np.inf if seeds_var == 0 else variance**2 / ((seeds_var / n_seeds) ** 2 / (n_seeds - 1))
    se = float(np.sqrt(variance))
    half = float(scipy_stats.t.ppf(0.5 + level / 2, df)) * se
    if se > 0:
        p = float(2 * scipy_stats.t.sf(abs(mean) / se, df))
    else:
        p = 1.0 if mean == 0 else 0.0
    return Estimate(mean, mean - half, mean + half, se, float(df), p)


def point(parts: list[Part]) -> float:
    """The score itself: the mean over seeds of the metric (averaged over Parts) on the whole test set."""
    return float(scores([parts], n_boot=1)[0][0].mean())


def interval(parts: list[Part], n_boot: int = BOOTSTRAP, seed: int = SEED, level: float = LEVEL) -> Estimate:
    """A method's score with its confidence interval over seeds and test examples."""
    observed, resampled = scores([parts], n_boot, seed)
    found = estimate(observed[0], resampled[:, 0], level)
    # t is symmetric, a score is bounded: 3 spread-out seeds near a bound would reach past it (an F1 above 1)
    low, high = (float(np.mean(bound)) for bound in zip(*(metrics.score_range(p.metric) for p in parts)))
    return replace(found, low=max(found.low, low), high=min(found.high, high))


def paired(a: list[Part], b: list[Part], n_boot: int = BOOTSTRAP, seed: int = SEED, level: float = LEVEL) -> Estimate:
    """A - B: the difference of two methods' scores (seeds paired row by row), its interval and p-value."""
    observed, resampled = scores([a, b], n_boot, seed)
    return estimate(observed[0] - observed[1], resampled[:, 0] - resampled[:, 1], level)


def majority(parts: list[Part]) -> list[Part]:
    """The majority-class baseline as a method: every seed predicts each task's most frequent test label."""
    return [replace(p, preds=np.full_like(p.preds, np.bincount(p.labels).argmax())) for p in parts]


def baselines(parts: list[Part], draws: int = 2000, seed: int = SEED) -> dict[str, float]:
    """The score of always predicting the majority test label, and the expected score of uniform random
    predictions (a seeded simulation of `draws` random predictors, exact up to simulation error)."""
    rng = np.random.default_rng(seed)
    majority_score = scores([majority([replace(p, preds=p.preds[:1]) for p in parts])], n_boot=1)[0][0, 0]
    random_score = 0.0
    for part in parts:
        classes = part.classes
        # a random predictor's confusion matrix: each gold class's examples spread uniformly over the classes
        counts = np.stack([rng.multinomial(n, np.full(classes, 1 / classes), size=draws)
                           for n in np.bincount(part.labels, minlength=classes)], axis=1)
        random_score += float(metrics.from_confusion(part.metric, counts).mean()) / len(parts)
    return {"majority": float(majority_score), "random": random_score}


def mcnemar(a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> float:
    """Exact McNemar test of two classifiers' accuracy on the same examples: two-sided binomial p-value of
    the examples only one of them gets right."""
    a_right, b_right = a == labels, b == labels
    only_a, only_b = int(np.sum(a_right & ~b_right)), int(np.sum(b_right & ~a_right))
    if only_a + only_b == 0:
        return 1.0
    return float(scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control; scipy has only false-discovery-rate
    control, and statsmodels is not a dependency): the i-th smallest p times (m - i + 1), kept monotone."""
    order = np.argsort(pvalues, kind="stable")
    m = len(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted.tolist()
