"""What every method gets (a FitContext) and gives back (a Solution)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from torch import Tensor

from prompt_bench.batching import EncodedSplit
from prompt_bench.checkpoint import Checkpoint
from prompt_bench import config_schema
from prompt_bench.errors import PromptBenchError
from prompt_bench.methods.blackbox import BlackBoxAPI
from prompt_bench.models.backbone import Backbone, EncodedBatch
from prompt_bench.prompts.placeholders import Placeholders
from prompt_bench.tasks.spec import TaskSpec
from prompt_bench.tracking import Tracker


ScoreFn = Callable[[Callable[[EncodedBatch], Tensor]], dict[str, float]]  # a scorer -> a split's metrics


@dataclass
class Evaluation:
    """How the run judges a prompt: dev metrics for selection, and (run.track_test, for curves only) test."""

    dev: ScoreFn
    metric: str  # the task's selection metric, a key of what `dev` returns
    batch_size: int = 64
    test: ScoreFn | None = None


@dataclass
class RunFiles:
    run_dir: Path | None = None  # for methods that write more than a prompt (e.g. tuned weights)
    cache_dir: Path | None = None  # shared between runs: artifacts that do not depend on the run (pre-trained prompts)
    mirror_root: Path | None = None  # the local data mirror, for methods that read more data (pre-training corpora)


@dataclass
class FitContext:
    """What every method gets. White-box and black-box methods get one of the two subclasses below, with only
    the services their access level allows."""

    task: TaskSpec
    train: EncodedSplit
    dev: EncodedSplit
    method: config_schema.Section  # the resolved `method` config, typed as conf/ declares it
    optimizer: config_schema.Section  # the resolved `optimizer` config, typed
    seed: int
    tracker: Tracker
    checkpoint: Checkpoint
    evaluation: Evaluation
    files: RunFiles = field(default_factory=RunFiles)

    def __post_init__(self):
        # typed once here, so a method reads cfg.budget as an int instead of casting where it uses it
        self.method = config_schema.section(self.method, "method")
        self.optimizer = config_schema.section(self.optimizer, "optimizer")


@dataclass
class WhiteBoxContext(FitContext):
    """access "gradient" or "none": the model itself."""

    backbone: Backbone | None = None
    patience: int | None = None  # gradient training stops after this many dev evaluations without a new best
    n_tasks: int = 0  # setting=multitask: how many tasks the mixture holds (rows carry their task's index)
    task_tokens: int = 0  # setting.prompt=shared+task: each task's own soft tokens after the shared prompt


@dataclass
class BlackBoxContext(FitContext):
    """access "black_box": only the billed API, and the train examples as text (for a method's own second
    model, GDFO's student)."""

    blackbox: BlackBoxAPI | None = None
    train_examples: list | None = None


@dataclass
class Solution:
    """What a method learned: a soft prompt [L, d] (or none), extra tensors worth keeping, and facts."""

    prompt: Tensor | None
    tensors: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    budget_used: int | None = None  # API calls (black-box) or optimizer steps (gradient)

    def scorer(self, backbone: Backbone) -> Callable[[EncodedBatch], Tensor]:
        prompt = None if self.prompt is None else self.prompt.unsqueeze(0)
        return lambda batch: backbone.label_logits(batch, prompt)[0]


class Method:
    """A method declares the access it needs; the experiment refuses impossible combinations before loading."""

    #: "none" (trains nothing), "gradient" (white-box), or "black_box" (only API calls)
    access: ClassVar[str] = "none"
    #: trains a task-specific prompt per task after the shared one under setting.prompt=shared+task
    task_specific_prompts: ClassVar[bool] = False

    @classmethod
    def check(cls, method_cfg: dict[str, Any]) -> None:
        """Raise ConfigError on bad hyperparameters, before any model or data is loaded."""

    @classmethod
    def prompt_length(cls, method_cfg: dict[str, Any]) -> int:
        return int(method_cfg.get("n_prompt_tokens", 0) or 0)

    @classmethod
    def placeholders(cls, method_cfg: dict[str, Any]) -> Placeholders | None:
        """Placeholder words the method's prompt is added onto (BBT's additive prompt); None: it is inserted."""
        return None

    @classmethod
    def reads_plain_input(cls, method_cfg: dict[str, Any]) -> bool:
        """Whether the method reads the task's `plain_input` (its text, no template or mask) instead of the
        templated input, as P-tuning v2's reference classification head does."""
        return False

    @classmethod
    def restore(cls, tensors: dict[str, Tensor], meta: dict[str, Any], method_cfg: dict[str, Any]) -> Solution:
        """The solution a finished run saved (its prompt.safetensors / prompt.json), ready to score new inputs
        (`prompt-bench-predict`). The default holds a shallow prompt or none; methods that keep more say how."""
        extra = sorted(set(tensors) - {"prompt"})
        if extra:
            raise PromptBenchError(f"a {cls.__name__} run's saved {', '.join(extra)} cannot be scored again here")
        return Solution(prompt=tensors.get("prompt"), meta=meta)

    def fit(self, ctx: FitContext) -> Solution:
        raise NotImplementedError

