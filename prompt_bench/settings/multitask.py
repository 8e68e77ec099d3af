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

from omegaconf import DictConfig, OmegaConf

from prompt_bench import conf_files
from prompt_bench.batching import EncodedSplit, encode_split
from prompt_bench.errors import ConfigError
from prompt_bench.models.backbone import Backbone
from prompt_bench.settings.base import Data, Encoding, Prepared, Setting
from prompt_bench.settings.few_shot import FewShot
from prompt_bench.tasks.spec import TaskSpec

MIXING = ("proportional", "uniform", "temperature")
PROMPTS = ("shared", "shared+task")


def task_tokens(cfg: DictConfig) -> int:
    """Soft tokens each task adds after the shared prompt (`setting.prompt=shared+task`); 0 for one shared prompt."""
    if str(cfg.setting.name) != "multitask" or str(cfg.setting.prompt) == "shared":
        return 0
    return int(cfg.setting.task_tokens)


def task_specs(cfg: DictConfig) -> list[TaskSpec]:
    names = list(cfg.setting.tasks or [])
    if len(names) < 2:
        raise ConfigError(f"setting=multitask needs at least two tasks in setting.tasks, got {names}")
    specs = [conf_files.task_spec(str(name), "setting.tasks") for name in names]
    if str(cfg.setting.mixing) not in MIXING:
        raise ConfigError(f"setting.mixing={cfg.setting.mixing} is not one of {', '.join(MIXING)}")
    if str(cfg.setting.prompt) not in PROMPTS:
        raise ConfigError(f"setting.prompt={cfg.setting.prompt} is not one of {', '.join(PROMPTS)}")
    if str(cfg.setting.prompt) == "shared+task" and int(cfg.setting.task_tokens) <= 0:
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
                        prompt_slots=first.prompt_slots, truncated=sum(split.truncated for split, _, _ in parts),
                        verbalizer=first.verbalizer)


def single_task_config(cfg: DictConfig) -> DictConfig:
    """Each task of a mixture is sampled as a few-shot run of its own, with the mixture's k."""
    return OmegaConf.merge(cfg, {"setting": {"name": "few_shot", "k": int(cfg.setting.k)}})


class Multitask(Setting):
    name = "multitask"

    def check(self, task, model, method_cfg, method_cls):
        for spec in task_specs(self.cfg):
            spec.template_for(model.family)
        if task_tokens(self.cfg) and not method_cls.task_specific_prompts:
            raise ConfigError(
                f"setting.prompt=shared+task needs a method that trains task-specific prompts (prompt_tuning); "
                f"method={self.cfg.method.name} trains one shared prompt: use setting.prompt=shared"
            )

    def check_plain_input(self, task):
        raise ConfigError("setting=multitask mixes templated tasks; a plain-input head (method.head=reference) "
                          "needs a single task")

    def load(self, task) -> list[tuple[TaskSpec, Data]]:
        """Every task's few-shot train/dev/test, sampled as a single-task few-shot run with the mixture's k."""
        single = FewShot(single_task_config(self.cfg))
        return [(spec, single.load(spec)) for spec in task_specs(self.cfg)]

    def prepare(self, task, data: list[tuple[TaskSpec, Data]], backbone: Backbone, encoding: Encoding) -> Prepared:
        """The tasks' splits combined into one union task; each task's test split scored on its own classes."""
        specs = [spec for spec, _ in data]
        union, index = union_task(specs)
        verbalizer = backbone.verbalizer(union.verbalizer)
        extra_tokens = task_tokens(self.cfg)
        prompt_len = encoding.prompt_len + extra_tokens
        per_task, tests, notes, sources = [], {}, [], {}
        for number, ((spec, split_data), to_union) in enumerate(zip(data, index)):
            train, dev, test = (encode_split(examples, spec, backbone, prompt_len, encoding.placeholders, verbalizer)
                                for examples in (split_data.train, split_data.dev, split_data.test))
            test.tasks = [number] * len(test)
            per_task.append((spec, to_union, train, dev))
            tests[spec.name] = (test, spec.metric, to_union)
            notes += [f"{spec.name}: {n}" for n in split_data.notes]
            sources.update({f"{spec.name}/{k}": v for k, v in split_data.sources.items()})
        times = repeats([len(t) for _, _, t, _ in per_task], str(self.options.mixing),
                        float(self.options.temperature))
        n_union = len(union.labels)
        train = _combine([(train, to_union, r) for (_, to_union, train, _), r in zip(per_task, times)], n_union)
        dev = _combine([(dev, to_union, 1) for (_, to_union, _, dev) in per_task], n_union)
        counts = {spec.name: {"train": len(train), "repeats": r, "dev": len(dev)}
                  for (spec, _, train, dev), r in zip(per_task, times)}
        return Prepared(task=union, train=train, dev=dev, tests=tests, notes=notes, sources=sources,
                        n_tasks=len(specs), task_tokens=extra_tokens, metric="average",
                        # the combined dev set's accuracy is what selection used
                        dev_aliases={"average": "accuracy"}, facts={"tasks": counts})
