"""Causal LMs (GPT-2, Llama/SmolLM2): the label is the verbalizer word predicted as the next token."""

from __future__ import annotations

from torch import Tensor

from prompt_bench.models.backbone import Backbone, Verbalizer


class CausalLMBackbone(Backbone):
    family = "causal_lm"
    prompt_offset = 0

    def encode_text(self, text: str) -> tuple[list[int], int]:
        ids = self.tokenizer(text, add_special_tokens=True).input_ids
        if ids and self.tokenizer.eos_token_id is not None and ids[-1] == self.tokenizer.eos_token_id and len(ids) > 1:
            ids = ids[:-1]  # some tokenizers append EOS; the label must follow the text itself
        return ids, len(ids) - 1

    def _features(self, embeds: Tensor, mask: Tensor, target: Tensor, prompt_mask: Tensor | None) -> Tensor:
        # Right padding: real tokens keep positions 0..n-1 and never attend to the pads after them.
        hidden = self.model.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return self._gather(hidden, target)

    def _verbalize(self, features: Tensor, verbalizer: Verbalizer) -> Tensor:
        return self.model.get_output_embeddings()(features)[:, verbalizer.ids]
