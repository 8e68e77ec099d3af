"""Inputs as THUDM/P-tuning-v2 feeds them to its classification head: the task's own text (one sentence or a
sentence pair, `task.plain_input`), tokenized by the model's tokenizer in its sentence-pair format with
longest-first truncation, with no template words and no mask (tasks/superglue/dataset.py and tasks/glue/dataset.py
there: `tokenizer(sentence1, sentence2, truncation=True, max_length=...)`).

The label is then read from the first token ([CLS] / <s>) on encoder families and from the last token on causal
LMs (`EncodedSplit.target`); seq2seq models read their first decoder step as usual.
"""

from __future__ import annotations

from typing import Sequence

from prompt_bench.batching import EncodedSplit
from prompt_bench.errors import ConfigError
from prompt_bench.models.backbone import Backbone, Verbalizer
from prompt_bench.tasks.spec import Example, TaskSpec


def check_plain_input(task: TaskSpec) -> None:
    if task.plain_input is None:
        raise ConfigError(f"task '{task.name}' has no plain_input (its text without a template, for P-tuning v2's "
                          "reference head): add one to its conf/task file, or use method.head=linear")


def encode_plain(examples: Sequence[Example], task: TaskSpec, backbone: Backbone, prompt_len: int = 0,
                 verbalizer: Verbalizer | None = None) -> EncodedSplit:
    """Tokenize `task.plain_input` for each example (pairs as the tokenizer joins them, truncated longest first
    to fit the task's and model's length with room for `prompt_len` soft tokens); scored with `verbalizer`
    (default: the task's label words) unless a head reads them."""
    if task.plain_input is None:
        raise ConfigError(f"task '{task.name}' has no plain_input")
    tokenizer = backbone.tokenizer
    budget = min(task.max_length, backbone.max_positions) - prompt_len
    first_token = backbone.family in ("masked_lm", "sentence_encoder")
    ids_all, targets = [], []
    for example in examples:
        parts = [part.format(**example.fields) for part in task.plain_input]
        ids = tokenizer(*parts, truncation=True, max_length=budget).input_ids
        if backbone.family == "causal_lm" and len(ids) > 1 and ids[-1] == tokenizer.eos_token_id:
            ids = ids[:-1]  # as CausalLMBackbone.encode_text: the label is read after the text itself
        ids_all.append(ids)
        targets.append(0 if first_token else len(ids) - 1)
    return EncodedSplit(ids=ids_all, target=targets, labels=[e.label for e in examples],
                        groups=[e.group for e in examples], pad_id=tokenizer.pad_token_id, device=backbone.device,
                        verbalizer=verbalizer if verbalizer is not None else backbone.verbalizer(task.verbalizer))
