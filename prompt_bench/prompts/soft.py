"""Shallow soft prompts: L vectors in the backbone's input-embedding space."""

from __future__ import annotations

import torch
from torch import Tensor

from prompt_bench.artifacts import load_tensors
from prompt_bench.errors import ConfigError


def initial_prompt(init: str, n_tokens: int, embeddings: Tensor, seed: int) -> Tensor:
    """[L, d] starting prompt: embeddings of random vocabulary words (Lester's best init), scaled noise,
    or a prompt saved by an earlier run."""
    generator = torch.Generator().manual_seed(seed)
    weights = embeddings.detach().float().cpu()
    if init == "vocab":
        # Lester et al. sample from the 5,000 most common tokens; ids roughly follow frequency in BPE and
        # WordPiece vocabularies, so skip the specials at the start and draw from the next 5,000.
        low, high = min(1000, weights.shape[0] // 4), min(6000, weights.shape[0])
        ids = torch.randint(low, high, (n_tokens,), generator=generator)
        return weights[ids].clone()
    if init == "random":
        return torch.randn(n_tokens, weights.shape[1], generator=generator) * weights.std()
    if init == "uniform":  # Xianjun-Yang/DPT's pool init: U(-0.5, 0.5) (random_range 0.5)
        return torch.rand(n_tokens, weights.shape[1], generator=generator) - 0.5
    try:
        tensors, _ = load_tensors(init)
    except FileNotFoundError:
        raise ConfigError(f"prompt init '{init}' is neither vocab, random, uniform nor an existing prompt .safetensors file") from None
    prompt = tensors["prompt"].float()
    if prompt.shape[1] != weights.shape[1]:
        raise ConfigError(
            f"prompt init '{init}' has width {prompt.shape[1]} but the model's embeddings are {weights.shape[1]}-d: "
            "recycle it first (method=recycling) or start from init=vocab"
        )
    return prompt
