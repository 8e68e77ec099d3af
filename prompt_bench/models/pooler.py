"""The [CLS] pooler (dense + tanh) that P-tuning v2's reference head reads (`outputs[1]` of BertModel /
RobertaModel in THUDM/P-tuning-v2 model/sequence_classification.py), frozen like the rest of the model.

A sentence encoder loaded as BertModel has it; a masked LM (BertForMaskedLM, RobertaForMaskedLM) is built without
it, so its weights are read from the checkpoint's safetensors files. A checkpoint without pooler weights (RoBERTa's)
gets what transformers' from_pretrained gives the reference there: a fresh N(0, initializer_range) weight and a zero
bias (seeded here), which stays frozen.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from prompt_bench.models.backbone import Backbone

log = logging.getLogger(__name__)


def _safetensors_files(backbone: Backbone) -> list[Path]:
    spec = backbone.spec
    if spec.gguf_file:
        return []
    if spec.is_local:
        return sorted(Path(spec.location).glob("*.safetensors"))
    try:  # a hub model: only what is already in the local cache (never a download here)
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec.location, "model.safetensors", revision=spec.revision)
        return [Path(found)] if isinstance(found, str) else []
    except Exception:  # noqa: BLE001 - no cache, no pooler from it
        return []


def pooler_weights(backbone: Backbone, seed: int) -> tuple[Tensor, Tensor, str]:
    """(weight [d, d], bias [d], where they came from: model | checkpoint | initialised)."""
    pooler = getattr(backbone.encoder_stack(), "pooler", None)
    dense = getattr(pooler, "dense", None)
    if isinstance(dense, torch.nn.Linear):
        return dense.weight.detach().float().clone(), dense.bias.detach().float().clone(), "model"
    from safetensors import safe_open

    for file in _safetensors_files(backbone):
        with safe_open(str(file), framework="pt") as handle:
            keys = [k for k in handle.keys() if k.endswith("pooler.dense.weight")]
            if keys:
                bias_key = keys[0][: -len("weight")] + "bias"
                return handle.get_tensor(keys[0]).float(), handle.get_tensor(bias_key).float(), "checkpoint"
    width = backbone.hidden_size
    std = float(getattr(backbone.model.config, "initializer_range", 0.02))
    generator = torch.Generator().manual_seed(seed + 2)
    log.info("%s has no pooler weights: a frozen pooler drawn from N(0, %g), as transformers initialises a missing one",
             backbone.spec.name, std)
    return torch.randn(width, width, generator=generator) * std, torch.zeros(width), "initialised"
