"""Examples -> templated token sequences -> padded batches on the backbone's device.

The template is filled per backbone family (a causal LM reads the label as the next token, so its
text stops at the mask), and long inputs lose words from their longest field, never the template or the
prompt: `task.max_length` bounds the templated text alone, and the model's position limit the whole row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from prompt_bench.models.backbone import Backbone, EncodedBatch, Verbalizer
from prompt_bench.prompts.placeholders import Placeholders
from prompt_bench.tasks.spec import MASK, Example, TaskSpec


def render(template: str, fields: dict[str, str], family: str, mask_token: str | None) -> str:
    if family in ("causal_lm", "seq2seq"):
        return template.split(MASK, 1)[0].format(**fields).rstrip()
    return template.format(**fields, mask=mask_token or "")


@dataclass
class EncodedSplit:
    """A whole split tokenized once; batches are cut from it and padded to their own longest row."""

    ids: list[list[int]]
    target: list[int]
    labels: list[int]
    groups: list[str | None]
    pad_id: int
    device: torch.device
    #: per row, the classes it may take (multitask splits over a union of label words); None: all
    allowed: list[list[bool]] | None = None
    #: per row, the index of the task it comes from (multitask splits); None: a single task
    tasks: list[int] | None = None
    #: placeholder words each row holds at the backbone's prompt offset, a soft prompt is added onto (0: none)
    prompt_slots: int = 0
    #: rows whose text lost words to fit the length limits
    truncated: int = 0
    #: the label words the rows are scored with (each batch carries it to `Backbone.label_logits`)
    verbalizer: Verbalizer | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: Sequence[int] | None = None) -> EncodedBatch:
        index = range(len(self.ids)) if index is None else index
        rows = [self.ids[i] for i in index]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        return EncodedBatch(
            input_ids=input_ids.to(self.device),
            attention_mask=attention.to(self.device),
            target_pos=torch.tensor([self.target[i] for i in index], device=self.device),
            labels=torch.tensor([self.labels[i] for i in index], device=self.device),
            class_mask=None if self.allowed is None
            else torch.tensor([self.allowed[i] for i in index], dtype=torch.bool, device=self.device),
            task_ids=None if self.tasks is None else torch.tensor([self.tasks[i] for i in index], device=self.device),
            prompt_slots=self.prompt_slots,
            verbalizer=self.verbalizer,
        )


def encode_split(examples: Sequence[Example], task: TaskSpec, backbone: Backbone, prompt_len: int = 0,
                 placeholders: Placeholders | None = None, verbalizer: Verbalizer | None = None) -> EncodedSplit:
    """Fill the task's template for this backbone and tokenize, leaving room for `prompt_len` soft tokens, or
    (with `placeholders`) writing the placeholder words a soft prompt is added onto at the prompt offset. The
    split is scored with `verbalizer` (default: the task's own label words on this backbone)."""
    template = task.template_for(backbone.family)
    prompt_len = placeholders.length if placeholders is not None else prompt_len
    budget = min(task.max_length, backbone.max_positions - prompt_len)
    tokenizer = backbone.tokenizer
    slot_ids = [] if placeholders is None else placeholders.ids(tokenizer, backbone.spec.name)

    def encode(fields: dict[str, str]) -> tuple[list[int], int]:
        text = render(template, fields, backbone.family, backbone.mask_token)
        return backbone.encode_text(text if placeholders is None else placeholders.text_after(text))

    ids_all, targets, truncated = [], [], 0
    for example in examples:
        fields = dict(example.fields)
        ids, target = encode(fields)
        truncated += len(ids) > budget
        for _ in range(4):
            excess = len(ids) - budget
            if excess <= 0:
                break
            longest = max(fields, key=lambda f: len(fields[f]))
            tokens = tokenizer.tokenize(fields[longest])
            fields[longest] = tokenizer.convert_tokens_to_string(tokens[: max(0, len(tokens) - excess - 1)])
            ids, target = encode(fields)
        ids, target = ids[:budget], min(target, budget - 1)
        if slot_ids:
            cut = backbone.prompt_offset
            ids = ids[:cut] + slot_ids + ids[cut:]
            target = target + len(slot_ids) if target >= cut else target
        ids_all.append(ids)
        targets.append(target)
    return EncodedSplit(
        ids=ids_all,
        target=targets,
        labels=[e.label for e in examples],
        groups=[e.group for e in examples],
        pad_id=tokenizer.pad_token_id,
        device=backbone.device,
        prompt_slots=len(slot_ids),
        truncated=truncated,
        verbalizer=verbalizer if verbalizer is not None else backbone.verbalizer(task.verbalizer),
    )
