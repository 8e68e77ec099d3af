"""Sentence encoders (all-MiniLM): no LM head, so a class scores by how close the prompted input's
mean-pooled embedding is to the embedding of its label word (a sentence-encoder verbalizer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prompt_bench.models.backbone import Backbone, Verbalizer


class SentenceEncoderBackbone(Backbone):
    family = "sentence_encoder"
    prompt_offset = 1  # after [CLS]
    reads_prompt_positions = True  # the pooled mean leaves the prompt out

    def _target_index(self, ids: list[int]) -> int:
        return 0  # unused: the whole sequence is pooled

    def verbalizer(self, words: tuple[str, ...]) -> Verbalizer:
        """`words` as sentence embeddings: the frozen model's normalised mean over each word's tokens."""
        with torch.no_grad():
            encoded = self.tokenizer(list(words), padding=True, return_tensors="pt").to(self.device)
            states = self.model(**encoded).last_hidden_state
            weights = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1)
        return Verbalizer(tuple(words), torch.arange(len(words), device=self.device), F.normalize(pooled, dim=-1))

    def _features(self, embeds: Tensor, mask: Tensor, target: Tensor, prompt_mask: Tensor | None) -> Tensor:
        states = self.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        weights = mask.to(states.dtype)
        if prompt_mask is not None and not self.spec.pool_prompt:
            # Pool the input's own tokens: the prompt then acts only through attention, as it does on an
            # LM, instead of adding a learnable constant to the pooled vector.
            weights = weights.masked_fill(prompt_mask, 0)
        weights = weights.unsqueeze(-1)
        return F.normalize((states * weights).sum(1) / weights.sum(1).clamp(min=1), dim=-1)

    def _verbalize(self, features: Tensor, verbalizer: Verbalizer) -> Tensor:
        return self.spec.similarity_scale * features @ verbalizer.embeddings.to(features.dtype).T
