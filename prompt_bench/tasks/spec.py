"""A task is data plus the words we wrap around it: this module holds that description.

A `TaskSpec` is built from one YAML file under `conf/task/`; nothing task-specific lives in code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from prompt_bench.errors import ConfigError

METRICS = ("accuracy", "f1", "macro_f1", "matthews", "multirc")
MASK = "{mask}"
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Example:
    """One labelled input: the task's text fields, a class index, and (MultiRC) the question it belongs to."""

    fields: Mapping[str, str]
    label: int
    group: str | None = None


@dataclass(frozen=True)
class MirrorSpec:
    """Where the task lives in a local mirror laid out as the official release."""

    format: str  # glue_tsv | superglue_jsonl | multirc_jsonl | ag_news_csv | snli_lines
    dir: str  # relative to the mirror root
    files: Mapping[str, str]  # our split name -> file name
    fields: Mapping[str, str]  # our field name -> column name or dotted json path
    label: str = "label"  # column / key holding the raw label
    header: bool = True  # glue_tsv: whether the first line names the columns
    substitute: Mapping[str, Any] = field(default_factory=dict)  # see tasks/loading.py


@dataclass(frozen=True)
class HubSpec:
    """The same task on the Hugging Face hub (used when no mirror is configured)."""

    path: str
    name: str | None
    splits: Mapping[str, str]  # our split name -> hub split name
    fields: Mapping[str, str | None]  # our field name -> hub column; None: folded into another column, read as ""
    revision: str | None = None  # a hub commit (or tag) to pin; null: the newest, recorded in results.json


@dataclass(frozen=True)
class TaskSpec:
    name: str
    benchmark: str
    labels: tuple[str, ...]  # raw label values, in class-index order
    verbalizer: tuple[str, ...]  # one label word per class
    template: str  # "{sentence} . It was {mask} ."; the soft prompt goes before it
    metric: str
    mirror: MirrorSpec
    hub: HubSpec | None  # None: a task with local files only (your own data)
    causal_template: str | None = None  # for families that can only predict the next token
    max_length: int = 256
    #: the input as P-tuning v2's reference code feeds it to a classification head: one text or a sentence pair,
    #: each a format string over the fields, no template words around them and no mask (method.head=reference)
    plain_input: tuple[str, ...] | None = None
    #: the named alternative template + verbalizer in use (`task.style`, one of the task's `styles`), if any
    style: str | None = None
    #: the key of the task's metrics that best-on-dev selection maximises (default: the headline metric)
    select: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.mirror.fields)

    @property
    def selection_metric(self) -> str:
        """What best-on-dev selection maximises: `select` if the style sets one, else the headline metric."""
        from prompt_bench.tasks.metrics import primary

        return self.select or primary(self.metric)

    def template_for(self, family: str) -> str:
        """The template a backbone family can express, or a ConfigError naming the fix."""
        if family in ("causal_lm", "seq2seq"):
            template = self.causal_template or self.template
            tail = template.split(MASK, 1)[1]
            if re.search(r"\w|\{", tail):
                raise ConfigError(
                    f"task '{self.name}' puts the label word mid-sentence ('{template}'), but a {family} "
                    "backbone only predicts the next token: set task.causal_template to a template that "
                    "ends with {mask}, or pick a masked-LM / sentence-encoder model"
                )
            return template
        return self.template

    @staticmethod
    def from_config(cfg: Mapping[str, Any]) -> "TaskSpec":
        try:
            mirror = dict(cfg["mirror"])
            hub = dict(cfg["hub"]) if cfg.get("hub") else None
            words = {"template": cfg["template"], "causal_template": cfg.get("causal_template"),
                     "verbalizer": cfg["verbalizer"], "select": None}
            style = cfg.get("style")
            if style:
                # a style replaces the template(s) and label words as a whole: a paper's own wording of the task
                styles = dict(cfg.get("styles") or {})
                if style not in styles:
                    known = ", ".join(styles) or "none"
                    raise ConfigError(f"task '{cfg['name']}' has no style '{style}' (its styles: {known}): "
                                      "set task.style=null or add it under the task's styles")
                chosen = dict(styles[style])
                words = {"template": chosen["template"], "causal_template": chosen.get("causal_template"),
                         "verbalizer": chosen.get("verbalizer", cfg["verbalizer"]), "select": chosen.get("select")}
            plain = cfg.get("plain_input")
            spec = TaskSpec(
                name=str(cfg["name"]),
                benchmark=str(cfg.get("benchmark", "custom")),
                labels=tuple(str(x) for x in cfg["labels"]),
                verbalizer=tuple(str(x) for x in words["verbalizer"]),
                template=str(words["template"]),
                causal_template=words["causal_template"],
                metric=str(cfg["metric"]),
                max_length=int(cfg.get("max_length", 256)),
                plain_input=None if plain is None else tuple(str(x) for x in plain),
                style=str(style) if style else None,
                select=words["select"],
                mirror=MirrorSpec(
                    format=mirror["format"],
                    dir=mirror["dir"],
                    files=dict(mirror["files"]),
                    fields=dict(mirror["fields"]),
                    label=mirror.get("label", "label"),
                    header=bool(mirror.get("header", True)),
                    substitute=dict(mirror.get("substitute") or {}),
                ),
                hub=None if hub is None else HubSpec(
                    path=hub["path"],
                    name=hub.get("name"),
                    splits=dict(hub["splits"]),
                    fields=dict(hub["fields"]),
                    revision=hub.get("revision"),
                ),
            )
        except KeyError as missing:
            raise ConfigError(f"task config is missing the key {missing}: see conf/task/sst2.yaml for the shape") from None
        spec._check()
        return spec

    def _check(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"task '{self.name}': unknown metric '{self.metric}'; use one of {', '.join(METRICS)}")
        if len(self.verbalizer) != len(self.labels):
            raise ConfigError(
                f"task '{self.name}': {len(self.verbalizer)} label words for {len(self.labels)} labels; give one word per label"
            )
        for template in filter(None, (self.template, self.causal_template)):
            if template.count(MASK) != 1:
                raise ConfigError(f"task '{self.name}': template '{template}' must contain {MASK} exactly once")
            unknown = set(_FIELD.findall(template)) - set(self.field_names) - {"mask"}
            if unknown:
                raise ConfigError(
                    f"task '{self.name}': template uses {sorted(unknown)} but the task only has fields {list(self.field_names)}"
                )
        if self.plain_input is not None:
            if not 1 <= len(self.plain_input) <= 2:
                raise ConfigError(f"task '{self.name}': plain_input is one text or a pair, got {len(self.plain_input)}")
            for part in self.plain_input:
                unknown = set(_FIELD.findall(part)) - set(self.field_names)
                if unknown:
                    raise ConfigError(f"task '{self.name}': plain_input uses {sorted(unknown)} but the task only has "
                                      f"fields {list(self.field_names)} (and no mask)")
        if self.select is not None:
            from prompt_bench.tasks.metrics import primary

            allowed = {"accuracy", primary(self.metric)} | ({"em"} if self.metric == "multirc" else set())
            if self.select not in allowed:
                raise ConfigError(f"task '{self.name}': style '{self.style}' selects on '{self.select}', which the "
                                  f"{self.metric} metric does not compute: use one of {', '.join(sorted(allowed))}")
