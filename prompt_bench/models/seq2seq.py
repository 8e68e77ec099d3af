"""Encoder-decoder LMs (T5): the prompted input goes to the encoder, the label word is read at the first decoder step."""

from __future__ import annotations

import torch
from torch import Tensor

from prompt_bench.models.backbone import Backbone, Verbalizer


class Seq2SeqBackbone(Backbone):
    family = "seq2seq"
    prompt_offset = 0

    def _target_index(self, ids: list[int]) -> int:
        return len(ids) - 1  # unused: the decoder's first step is the target

    @property
    def max_positions(self) -> int:
        return 512  # T5 has relative positions; 512 is what it was trained with

    def _features(self, embeds: Tensor, mask: Tensor, target: Tensor, prompt_mask: Tensor | None) -> Tensor:
        encoded = self.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        start = torch.full((embeds.shape[0], 1), self.model.config.decoder_start_token_id, device=embeds.device)
        decoded = self.model.get_decoder()(input_ids=start, encoder_hidden_states=encoded, encoder_attention_mask=mask)
        return decoded.last_hidden_state[:, 0]

    def _verbalize(self, features: Tensor, verbalizer: Verbalizer) -> Tensor:
        config = self.model.config
        if hasattr(self.model, "model_dim") and getattr(config, "scale_decoder_outputs", config.tie_word_embeddings):
            features = features * self.model.model_dim ** -0.5  # T5 rescales before its (tied) LM head
        return self.model.get_output_embeddings()(features)[:, verbalizer.ids]
