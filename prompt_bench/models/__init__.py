"""Backbones: one frozen PLM per run (or two, for methods that need a second model)."""

from __future__ import annotations

from prompt_bench.models.backbone import Backbone, EncodedBatch
from prompt_bench.models.loading import ModelSpec, load_pretrained, pick_device, pick_dtype

__all__ = ["Backbone", "EncodedBatch", "ModelSpec", "build_backbone"]


def build_backbone(spec: ModelSpec, device: str = "auto", bf16: bool | str = False, max_tokens_per_forward: int | str = "auto") -> Backbone:
    from prompt_bench.models.causal_lm import CausalLMBackbone
    from prompt_bench.models.masked_lm import MaskedLMBackbone
    from prompt_bench.models.sentence_encoder import SentenceEncoderBackbone
    from prompt_bench.models.seq2seq import Seq2SeqBackbone

    adapter = {
        "masked_lm": MaskedLMBackbone,
        "causal_lm": CausalLMBackbone,
        "seq2seq": Seq2SeqBackbone,
        "sentence_encoder": SentenceEncoderBackbone,
    }[spec.family]
    where = pick_device(device)
    model, tokenizer = load_pretrained(spec, where, pick_dtype(where, bf16))
    if max_tokens_per_forward == "auto":
        # Measured on 2 CPU cores (MiniLM, a 20 x 32 population): 1-2k tokens per forward is fastest,
        # larger chunks fall out of cache; a GPU wants big forwards to fill its cores.
        max_tokens_per_forward = 65536 if where.type == "cuda" else 2048
    return adapter(spec, model, tokenizer, where, max_tokens_per_forward=int(max_tokens_per_forward))
