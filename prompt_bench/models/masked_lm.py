"""Masked LMs (BERT, RoBERTa): the label is the verbalizer word predicted at the mask."""

from __future__ import annotations

from torch import Tensor

from prompt_bench.errors import ModelError
from prompt_bench.models.backbone import Backbone, Verbalizer


class MaskedLMBackbone(Backbone):
    family = "masked_lm"
    prompt_offset = 1  # after [CLS] / <s>, as BBT does

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer.mask_token_id is None:
            raise ModelError(f"model '{self.spec.name}' has no mask token, so it cannot be a masked_lm: set model.family")
        # The MLM head runs only at the mask position: a full [N, T, V] vocabulary projection would
        # dominate time and memory for RoBERTa's 50k-word vocabulary.
        self._head = next((getattr(self.model, n) for n in ("lm_head", "cls", "generator_lm_head") if hasattr(self.model, n)), None)
        if self._head is None:
            raise ModelError(f"model '{self.spec.name}' ({type(self.model).__name__}) has no MLM head we know "
                             "(lm_head, cls, generator_lm_head): set model.family to the family it belongs to")

    def _target_index(self, ids: list[int]) -> int:
        try:
            return ids.index(self.tokenizer.mask_token_id)
        except ValueError:
            raise ModelError("a templated input lost its mask token (truncated?); raise task.max_length") from None

    def _features(self, embeds: Tensor, mask: Tensor, target: Tensor, prompt_mask: Tensor | None) -> Tensor:
        hidden = self.model.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return self._gather(hidden, target)

    def _verbalize(self, features: Tensor, verbalizer: Verbalizer) -> Tensor:
        logits = self._head(features.unsqueeze(1))[:, 0, verbalizer.ids]
        if not self.spec.label_bias:
            # bbt.py:199 replaces RoBERTa's lm_head.bias by zeros; removing it from the label words' logits is
            # the same and leaves the loaded weights untouched
            bias = getattr(self.model.get_output_embeddings(), "bias", None)
            if bias is not None:
                logits = logits - bias[verbalizer.ids].to(logits.dtype)
        return logits
