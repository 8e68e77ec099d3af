"""Shallow soft prompts: L vectors in the backbone's input-embedding space."""

from __future__ import annotations

import torch
from torch import Tensor

from prompt_bench.artifacts import load_tensors, tensor_shapes
from prompt_bench.errors import ConfigError


INITS = ("vocab", "random", "uniform")


def check_init(init: str, n_tokens: int, key: str = "method.init") -> None:
    """Before any model loads: a file init exists, is a prompt, and has the length the config asks for."""
    if init in INITS:
        return
    from pathlib import Path

    if not Path(init).with_suffix("").with_suffix(".safetensors").is_file():
        raise ConfigError(f"{key}={init} is neither {', '.join(INITS)} nor an existing prompt .safetensors file")
    shapes = tensor_shapes(init, fix=f"point {key} at a prompt.safetensors from a finished run")
    if "prompt" not in shapes:
        raise ConfigError(f"{key}={init} holds no 'prompt' tensor (it has {', '.join(shapes) or 'none'}): "
                          "point it at a prompt.safetensors from a finished run")
    length = shapes["prompt"][0]
    if length != n_tokens:
        raise ConfigError(f"{key}={init} is a {length}-token prompt but method.n_prompt_tokens={n_tokens}: "
                          f"set method.n_prompt_tokens={length}")


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
        tensors, _ = load_tensors(init, fix="point method.init at a prompt.safetensors from a finished run")
    except FileNotFoundError:
        raise ConfigError(f"prompt init '{init}' is neither vocab, random, uniform nor an existing prompt .safetensors file") from None
    prompt = tensors["prompt"].float()
    if prompt.shape[1] != weights.shape[1]:
        raise ConfigError(
            f"prompt init '{init}' has width {prompt.shape[1]} but the model's embeddings are {weights.shape[1]}-d: "
            "recycle it first (method=recycling) or start from init=vocab"
        )
    return prompt
