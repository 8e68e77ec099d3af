"""setting=multitask: one prompt trained on a mixture of tasks and evaluated on each of them.

The tasks' label words are pooled into one union verbalizer; every example keeps its own task's template and
may only take its own task's words (a per-row class mask on the logits). So a mixed batch is an ordinary batch
and every method runs unchanged: a gradient method trains one shared prompt on the mixture, a black-box
method's loss for a candidate is the loss over all tasks' train examples together (the reward sums over
tasks). The mixing rate decides how often each task's examples appear in the combined train split:
`proportional` (as sampled), `uniform` (each task as often as the largest), or `temperature` (share of
task t proportional to n_t^(1/T), as in multilingual / T5 mixing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prompt_bench import conf_files, predictions
from prompt_bench.batching import EncodedSplit, encode_split
from prompt_bench.errors import ConfigError
from prompt_bench.models.backbone import Backbone
from prompt_bench.tasks.spec import TaskSpec

MIXING = ("proportional", "uniform", "temperature")
PROMPTS = ("shared", "shared+task")


def task_tokens(cfg: DictConfig) -> int:
    """Soft tokens each task adds after the shared prompt (`setting.prompt=shared+task`); 0 for one shared prompt."""
    if str(cfg.setting.name) != "multitask" or str(cfg.setting.get("prompt", "shared")) == "shared":
        return 0
    return int(cfg.setting.task_tokens)


def task_specs(cfg: DictConfig) -> list[TaskSpec]:
    names = list(cfg.setting.tasks or [])
    if len(names) < 2:
        raise ConfigError(f"setting=multitask needs at least two tasks in setting.tasks, got {names}")
    specs = [conf_files.task_spec(str(name), "setting.tasks") for name in names]
    if str(cfg.setting.mixing) not in MIXING:
        raise ConfigError(f"setting.mixing={cfg.setting.mixing} is not one of {', '.join(MIXING)}")
    if str(cfg.setting.get("prompt", "shared")) not in PROMPTS:
        raise ConfigError(f"setting.prompt={cfg.setting.prompt} is not one of {', '.join(PROMPTS)}")
    if str(cfg.setting.get("prompt", "shared")) == "shared+task" and int(cfg.setting.task_tokens) <= 0:
        raise ConfigError(f"setting.task_tokens must be positive with setting.prompt=shared+task, got {cfg.setting.task_tokens}")
    if int(cfg.setting.k) <= 0:
        raise ConfigError(f"setting.k must be a positive number of examples per class, got {cfg.setting.k}")
    return specs


def union_task(specs: list[TaskSpec]) -> tuple[TaskSpec, list[list[int]]]:
    """(the union task, per task the union index of each of its classes). Tasks sharing a label word share
    its union class (SST-2's and MRPC's words stay apart unless they are the same word)."""
    words: list[str] = []
    index: list[list[int]] = []
    for spec in specs:
        row = []
        for word in spec.verbalizer:
            if word not in words:
                words.append(word)
            row.append(words.index(word))
        index.append(row)
    first = specs[0]
    union = TaskSpec(
        name="+".join(s.name for s in specs), benchmark="multitask", labels=tuple(words), verbalizer=tuple(words),
        template=first.template, metric="accuracy", mirror=first.mirror, hub=first.hub,
        causal_template=first.causal_template, max_length=max(s.max_length for s in specs),
    )
    return union, index


def repeats(sizes: list[int], mixing: str, temperature: float) -> list[int]:
    """How many times each task's train examples go into the combined split."""
    if mixing == "proportional":
        return [1] * len(sizes)
    if mixing == "uniform":
        return [max(1, round(max(sizes) / n)) for n in sizes]
    if temperature <= 0:
        raise ConfigError(f"setting.temperature must be positive, got {temperature}")
    shares = [n ** (1 / temperature) for n in sizes]
    total = sum(sizes)
    return [max(1, round(total * s / sum(shares) / n)) for s, n in zip(shares, sizes)]


@dataclass
class MultitaskData:
    task: TaskSpec  # the union task the method sees
    train: EncodedSplit
    dev: EncodedSplit
    tests: dict[str, tuple[TaskSpec, EncodedSplit, list[int]]] = field(default_factory=dict)  # name -> (task, split, union index)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)


def _combine(parts: list[tuple[EncodedSplit, list[int], int]], n_union: int) -> EncodedSplit:
    """Concatenate per-task splits, labels moved into the union, each row allowed only its task's classes
    and tagged with its task's index."""
    ids, target, labels, groups, allowed, tasks = [], [], [], [], [], []
    for task, (split, to_union, times) in enumerate(parts):
        mask = [False] * n_union
        for u in to_union:
            mask[u] = True
        for _ in range(times):
            ids += split.ids
            target += split.target
            labels += [to_union[y] for y in split.labels]
            groups += split.groups
            allowed += [list(mask)] * len(split)
            tasks += [task] * len(split)
    first = parts[0][0]
    return EncodedSplit(ids, target, labels, groups, first.pad_id, first.device, allowed, tasks,
                        prompt_slots=first.prompt_slots, truncated=sum(split.truncated for split, _, _ in parts))


def single_task_config(cfg: DictConfig) -> DictConfig:
    """Each task of a mixture is sampled as a few-shot run of its own, with the mixture's k."""
    return OmegaConf.merge(cfg, {"setting": {"name": "few_shot", "k": int(cfg.setting.k)}})


def prepare(cfg: DictConfig, backbone: Backbone, prompt_len: int, load_data, placeholders=None) -> MultitaskData:
    """Few-shot train/dev of every task (by `load_data(cfg, task)`, the single-task protocol), combined."""
    specs = task_specs(cfg)
    union, index = union_task(specs)
    backbone.set_verbalizer(union.verbalizer)
    per_task = []
    out = MultitaskData(task=union, train=None, dev=None)  # type: ignore[arg-type]
    single = single_task_config(cfg)
    prompt_len += task_tokens(cfg)
    for number, (spec, to_union) in enumerate(zip(specs, index)):
        data = load_data(single, spec)
        train = encode_split(data.train, spec, backbone, prompt_len, placeholders)
        dev = encode_split(data.dev, spec, backbone, prompt_len, placeholders)
        test = encode_split(data.test, spec, backbone, prompt_len, placeholders)
        test.tasks = [number] * len(test)
        per_task.append((spec, to_union, train, dev))
        out.tests[spec.name] = (spec, test, to_union)
        out.notes += [f"{spec.name}: {n}" for n in data.notes]
        out.sources.update({f"{spec.name}/{k}": v for k, v in data.sources.items()})
    times = repeats([len(t) for _, _, t, _ in per_task], str(cfg.setting.mixing), float(cfg.setting.get("temperature", 1.0)))
    out.train = _combine([(train, to_union, r) for (_, to_union, train, _), r in zip(per_task, times)], len(union.labels))
    out.dev = _combine([(dev, to_union, 1) for (_, to_union, _, dev) in per_task], len(union.labels))
    out.counts = {spec.name: {"train": len(train), "repeats": r, "dev": len(dev)}
                  for (spec, _, train, dev), r in zip(per_task, times)}
    return out


def test_splits(data: MultitaskData) -> dict[str, tuple[EncodedSplit, str, list[int]]]:
    """Each task's test split, metric and union classes (only its own words compete), for predictions.of_split."""
    return {name: (split, spec.metric, to_union) for name, (spec, split, to_union) in data.tests.items()}


def score_tests(scorer, data: MultitaskData, batch_size: int) -> dict[str, float]:
    """Every task's own metrics (its classes only, labels back in its own index), and `average`: the mean of
    the tasks' headline metrics."""
    return predictions.scores({name: predictions.of_split(scorer, split, metric, batch_size, classes, desc=f"test {name}")
                               for name, (split, metric, classes) in test_splits(data).items()})
