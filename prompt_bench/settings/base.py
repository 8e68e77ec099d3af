"""What every setting provides: plan-time checks, the data a run needs, encoded for its backbone.

The run loop (experiment.py) asks a setting three things and never which setting it is: `check` (before
anything loads), `load` (the raw examples, so a missing file or an impossible k fails before any weights
load), and `prepare` (the splits encoded for the backbone, the test splits to score, and the notes and
facts that go into results.json). A setting may also adapt the method's config to its data (`method_config`,
e.g. full-data epochs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import DictConfig

from prompt_bench import conf_files
from prompt_bench.batching import EncodedSplit, encode_split
from prompt_bench.errors import DataError
from prompt_bench.models.backbone import Backbone
from prompt_bench.models.loading import ModelSpec
from prompt_bench.plain_input import check_plain_input, encode_plain
from prompt_bench.prompts.placeholders import Placeholders
from prompt_bench.tasks import loading, metrics
from prompt_bench.tasks.spec import TaskSpec


@dataclass
class Data:
    """One task's raw examples, split by the setting's protocol."""

    train: list
    dev: list
    test: list
    notes: list[str]
    sources: dict[str, str]


@dataclass
class Encoding:
    """How the method wants its inputs: soft-prompt slots, placeholder words, plain text instead of a template."""

    prompt_len: int
    placeholders: Placeholders | None = None
    plain_input: bool = False
    black_box: bool = False  # the method only makes API calls (full data: each call scores a sample)


@dataclass
class Prepared:
    """The encoded splits a method trains and is scored on, and the facts results.json reports about them."""

    task: TaskSpec  # what the method sees (the union of the tasks under setting=multitask)
    train: EncodedSplit
    dev: EncodedSplit
    tests: dict[str, tuple[EncodedSplit, str, list[int] | None]]  # name -> (split, metric, classes that compete)
    notes: list[str]
    sources: dict[str, str]
    train_examples: list | None = None  # the train examples as text, for methods with a second model (GDFO)
    n_tasks: int = 0  # several tasks: rows carry their task's index
    task_tokens: int = 0  # soft tokens each task adds after the shared prompt
    metric: str = ""  # the headline metric results.json names
    dev_aliases: dict[str, str] = field(default_factory=dict)  # extra dev score keys: alias -> the key it repeats
    facts: dict[str, Any] = field(default_factory=dict)  # setting-specific entries of results.json

    @property
    def n_test(self) -> int:
        return sum(len(split) for split, _, _ in self.tests.values())


class Setting:
    """A single-task setting: one task's train split is divided into train and dev by `split`, test is the
    task's test split. Subclasses say how to split."""

    name: ClassVar[str]

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.options = cfg.setting
        self.seed = int(cfg.seed)

    # -- before anything loads --------------------------------------------------------------------------
    def check(self, task: TaskSpec, model: ModelSpec, method_cfg: dict[str, Any], method_cls: type) -> None:
        task.template_for(model.family)
        self.check_options()

    def check_options(self) -> None:
        """Raise ConfigError on impossible setting.* values."""

    def check_plain_input(self, task: TaskSpec) -> None:
        check_plain_input(task)

    # -- data ----------------------------------------------------------------------------------------------
    def load(self, task: TaskSpec) -> Data:
        root = loading.mirror_root(self.cfg.data.mirror)
        pool = loading.load_split(task, "train", root)
        test = loading.load_split(task, "test", root)
        try:
            train, dev, extra = self.split(task, pool.examples, root)
        except DataError as err:
            raise DataError(f"task {task.name}: {err}") from None
        notes = [n for n in (pool.note, test.note, extra and extra.note) if n]
        sources = {"train": pool.source, "test": test.source}
        if extra is not None:
            sources["dev"] = extra.source
        data = Data(train, dev, test.examples, list(dict.fromkeys(notes)), sources)
        if conf_files.task_default_setting(task.name) == self.name:
            data.notes.append(f"setting={self.name} is task {task.name}'s own default "
                              f"(conf/task/{task.name}.yaml); choose another with setting=...")
        return data

    def split(self, task: TaskSpec, pool: list, root) -> tuple[list, list, Any]:
        """(train, dev, the extra split dev came from or None) out of the task's train examples."""
        raise NotImplementedError

    def train_examples(self, data: Data, encoding: Encoding) -> list:
        """The train examples the method sees (all of them, unless the setting samples them)."""
        return data.train

    def prepare(self, task: TaskSpec, data: Data, backbone: Backbone, encoding: Encoding) -> Prepared:
        train_examples = self.train_examples(data, encoding)
        verbalizer = backbone.verbalizer(task.verbalizer)
        if encoding.plain_input:
            train, dev, test = (encode_plain(split, task, backbone, encoding.prompt_len, verbalizer)
                                for split in (train_examples, data.dev, data.test))
        else:
            train, dev, test = (encode_split(split, task, backbone, encoding.prompt_len, encoding.placeholders, verbalizer)
                                for split in (train_examples, data.dev, data.test))
        notes = list(data.notes)
        truncated = {name: split.truncated for name, split in (("train", train), ("dev", dev), ("test", test))}
        if any(truncated.values()):
            notes.append("inputs cut to task.max_length (text only, never the prompt or template): "
                         + ", ".join(f"{n} {name}" for name, n in truncated.items() if n))
        return Prepared(task=task, train=train, dev=dev, tests={task.name: (test, task.metric, None)}, notes=notes,
                        sources=data.sources, train_examples=list(train_examples), metric=metrics.primary(task.metric))

    # -- training --------------------------------------------------------------------------------------------
    def method_config(self, method_cfg: dict[str, Any], gradient: bool, n_train: int) -> dict[str, Any]:
        """The method's config as this setting runs it (unchanged unless the setting counts training its own way)."""
        return method_cfg

    @property
    def patience(self) -> int | None:
        """Stop gradient training after this many dev evaluations without a new best (None: never)."""
        return None
