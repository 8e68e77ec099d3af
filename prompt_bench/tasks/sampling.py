"""Which labelled examples a run may train and select on.

Few-shot runs follow the Black-Box-Tuning / LM-BFF protocol: k training and k development examples
per class, drawn from the task's train split with the run seed, so each seed is a different few-shot
task and the test split is never touched. FewGLUE runs (PET, Schick & Schuetze 2021) fix the total
instead: 32 training examples whatever the number of classes, plus a dev set of the same size.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from prompt_bench.errors import DataError
from prompt_bench.tasks.spec import Example


def few_shot(examples: Sequence[Example], k: int, seed: int, num_classes: int) -> tuple[list[Example], list[Example]]:
    """(train, dev) with exactly k examples of each class in each; deterministic in seed."""
    if k <= 0:
        raise DataError(f"few-shot needs at least one example per class: set setting.k to a positive number (got k={k})")
    counts = [0] * num_classes
    for ex in examples:
        if not 0 <= ex.label < num_classes:
            raise DataError(f"an example has label {ex.label} but the task has {num_classes} classes")
        counts[ex.label] += 1
    short = [c for c in range(num_classes) if counts[c] < 2 * k]
    if short:
        # Report the binding class: lowering k to its limit fixes every class at once.
        c = min(short, key=lambda i: counts[i])
        max_k = min(counts) // 2
        fix = f"lower setting.k to {max_k}" if max_k > 0 else "this train split cannot give a few-shot dev set"
        raise DataError(
            f"k={k} per class needs {2 * k} examples of class {c} for train+dev but the train split has only {counts[c]}: {fix}"
        )

    train: list[Example] = []
    dev: list[Example] = []
    taken = [0] * num_classes
    for i in np.random.RandomState(seed).permutation(len(examples)).tolist():
        ex = examples[i]
        n = taken[ex.label]
        if n < k:
            train.append(ex)
        elif n < 2 * k:
            dev.append(ex)
        else:
            continue
        taken[ex.label] = n + 1
        if len(dev) == k * num_classes:
            break
    return train, dev


def full_data(
    examples: Sequence[Example], seed: int, dev_fraction: float = 0.1, max_dev: int = 1000
) -> tuple[list[Example], list[Example]]:
    """(train, dev): the whole train split with a seeded random dev hold-out."""
    n_dev = min(max_dev, int(round(len(examples) * dev_fraction)))
    if n_dev < 1 or n_dev >= len(examples):
        raise DataError(
            f"cannot hold out a dev set of {n_dev} from {len(examples)} training examples: "
            "the train split is too small for full-data training (use few-shot) or dev_fraction is out of range"
        )
    order = np.random.RandomState(seed).permutation(len(examples)).tolist()
    dev = [examples[i] for i in order[:n_dev]]
    train = [examples[i] for i in order[n_dev:]]
    return train, dev


def fixed_total(
    examples: Sequence[Example], n_train: int, n_dev: int, seed: int, num_classes: int
) -> tuple[list[Example], list[Example]]:
    """(train, dev) of exactly n_train and n_dev disjoint examples in total (FewGLUE/PET: 32, not per class).

    Both are stratified: each class's share of train and of dev follows its share of the pool, rounded by
    largest remainder, except that every class present in the pool gets at least one example of train
    (when n_train >= num_classes) and of dev (when n_dev >= num_classes), taken from the classes rounding
    gave most. Which examples fill each quota is a seeded draw, so each seed is a different few-shot task.
    """
    if n_train < 0 or n_dev < 0 or n_train + n_dev == 0:
        raise DataError(
            f"setting.n_train and setting.n_dev must be non-negative and not both 0 (got n_train={n_train}, n_dev={n_dev})"
        )
    if len(examples) < n_train + n_dev:
        raise DataError(
            f"n_train={n_train} + n_dev={n_dev} = {n_train + n_dev} examples are needed but the pool has only "
            f"{len(examples)}: lower setting.n_train / setting.n_dev (to {len(examples)} in all) or use setting=few_shot"
        )
    counts = [0] * num_classes
    for ex in examples:
        if not 0 <= ex.label < num_classes:
            raise DataError(f"an example has label {ex.label} but the task has {num_classes} classes")
        counts[ex.label] += 1

    train_quota = _apportion(n_train, counts, counts)
    dev_quota = _apportion(n_dev, counts, [c - t for c, t in zip(counts, train_quota)])

    train: list[Example] = []
    dev: list[Example] = []
    taken_train = [0] * num_classes
    taken_dev = [0] * num_classes
    for i in np.random.RandomState(seed).permutation(len(examples)).tolist():
        ex = examples[i]
        c = ex.label
        if taken_train[c] < train_quota[c]:
            train.append(ex)
            taken_train[c] += 1
        elif taken_dev[c] < dev_quota[c]:
            dev.append(ex)
            taken_dev[c] += 1
        if len(train) == n_train and len(dev) == n_dev:
            break
    return train, dev


def _apportion(total: int, counts: Sequence[int], caps: Sequence[int]) -> list[int]:
    """Split `total` over classes in proportion to `counts` (largest remainder), at most caps[c] each.

    A class with room gets at least one when total allows one for every class with room. The caller
    guarantees total <= sum(caps).
    """
    pool = sum(counts)
    exact = [total * c / pool for c in counts]
    quota = [min(int(e), cap) for e, cap in zip(exact, caps)]
    # Largest remainder: hand out what flooring left, one at a time, to the class furthest below its
    # exact share (ties to the lower class index); a full class is skipped.
    while sum(quota) < total:
        c = max((i for i in range(len(quota)) if quota[i] < caps[i]), key=lambda i: (exact[i] - quota[i], -i))
        quota[c] += 1
    with_room = [i for i in range(len(quota)) if caps[i] > 0]
    if total >= len(with_room):
        for c in with_room:
            if quota[c] == 0:
                # Take one from the class rounding favoured most that can spare it (it has >= 2: the
                # quotas sum to total >= classes with room, and this one has none).
                donor = max((i for i in range(len(quota)) if quota[i] >= 2), key=lambda i: (quota[i] - exact[i], -i))
                quota[donor] -= 1
                quota[c] = 1
    return quota
