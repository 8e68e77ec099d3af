"""Encoder-decoder LMs (T5): the prompted input goes to the encoder, the label word is read at the first decoder step."""

from __future__ import annotations

import torch
from torch import Tensor

from prompt_bench.models.backbone import Backbone


class Seq2SeqBackbone(Backbone):
    family = "seq2seq"
    prompt_offset = 0

    def _target_index(self, ids: list[int]) -> int:
        return len(ids) - 1  # unused: the decoder's first step is the target

    @property
    def max_positions(self) -> int:
        return 512  # T5 has relative positions; 512 is what it was trained with

    def _class_scores(self, embeds: Tensor, mask: Tensor, target: Tensor, prompt_len: int) -> Tensor:
        start = torch.full((embeds.shape[0], 1), self.model.config.decoder_start_token_id, device=embeds.device)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=start).logits
        return logits[:, 0, self.label_ids]
