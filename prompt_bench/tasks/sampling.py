"""Which labelled examples a run may train and select on.

Few-shot runs follow the Black-Box-Tuning / LM-BFF protocol: k training and k development examples
per class, drawn from the task's train split with the run seed, so each seed is a different few-shot
task and the test split is never touched.
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
