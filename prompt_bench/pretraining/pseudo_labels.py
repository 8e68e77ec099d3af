"""PPT's single-sentence classification format with pseudo-labels.

PPT (Gu et al. 2022) pre-trains prompts on "sentence-single" classification: a sentence, a template and
5 sentiment label words, labelled by a teacher. Here the teacher is the frozen backbone itself, zero-shot
(or a teacher prompt saved by an earlier run): its label-word scores, centred by their mean over the corpus
(so a model that prefers one word everywhere does not label everything with it), give each text its class.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prompt_bench.artifacts import load_tensors
from prompt_bench.batching import encode_split
from prompt_bench.errors import ConfigError
from prompt_bench.evaluation import predict
from prompt_bench.models.backbone import Backbone
from prompt_bench.tasks.spec import Example, TaskSpec

LABEL_WORDS = ("terrible", "bad", "okay", "good", "great")


def sentence_task(words: tuple[str, ...] = LABEL_WORDS) -> TaskSpec:
    """The pre-training task: one text field, PPT-style template, one label word per pseudo-class."""
    return TaskSpec.from_config({
        "name": "ppt_sentence", "benchmark": "pretraining", "labels": [str(i) for i in range(len(words))],
        "verbalizer": list(words), "template": "{text} It was {mask} .", "causal_template": "{text} It was {mask}",
        "metric": "accuracy", "max_length": 128,
        "mirror": {"format": "none", "dir": "", "files": {}, "fields": {"text": "text"}},
        "hub": {"path": "", "name": None, "splits": {}, "fields": {"text": "text"}},
    })


def pseudo_label(texts: list[str], backbone: Backbone, task: TaskSpec, teacher: str | None, batch_size: int) -> list[Example]:
    """Each text with the class the teacher gives it (mean-centred argmax over the label words)."""
    prompt = None
    if teacher:
        if not Path(teacher).is_file():
            raise ConfigError(f"teacher prompt {teacher} does not exist: point method.pretrain.teacher_prompt at a prompt.safetensors")
        prompt = load_tensors(teacher)[0]["prompt"].to(backbone.device)
    examples = [Example({"text": t}, 0) for t in texts]
    split = encode_split(examples, task, backbone, 0 if prompt is None else prompt.shape[0])
    scorer = (lambda batch: backbone.label_logits(batch)[0]) if prompt is None \
        else (lambda batch: backbone.label_logits(batch, prompt[None])[0])
    logits, _ = predict(scorer, split, batch_size, desc="pseudo-label the corpus")
    logits = torch.log_softmax(logits.float(), dim=-1)
    labels = (logits - logits.mean(0, keepdim=True)).argmax(-1).tolist()
    return [Example({"text": t}, int(y)) for t, y in zip(texts, labels)]
