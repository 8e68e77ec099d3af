"""BBT's random projection: a prompt is A z, z in R^d low-dimensional, A fixed and random."""

from __future__ import annotations

import math

import torch
from torch import Tensor


class RandomProjection:
    """A ~ N(0, alpha * std_hat / (sqrt(d) * sigma)) with std_hat the word embeddings' std (BBT's "normal"
    projection): then A z has roughly the embeddings' scale when CMA-ES samples z with step size sigma."""

    def __init__(self, intrinsic_dim: int, n_tokens: int, width: int, embedding_std: float, sigma: float,
                 alpha: float, seed: int, device: torch.device, dtype=torch.float32):
        self.n_tokens, self.width = n_tokens, width
        self.std = alpha * embedding_std / (math.sqrt(intrinsic_dim) * sigma)
        generator = torch.Generator().manual_seed(seed)
        matrix = torch.randn(n_tokens * width, intrinsic_dim, generator=generator) * self.std
        self.matrix = matrix.to(device=device, dtype=dtype)

    def __call__(self, z: Tensor) -> Tensor:
        """[P, d] -> [P, L, width]."""
        z = z.to(device=self.matrix.device, dtype=self.matrix.dtype)
        return (z @ self.matrix.T).view(z.shape[0], self.n_tokens, self.width)
