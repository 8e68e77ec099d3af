"""P-tuning v2's trainable per-layer prefixes, and the linear classification head it trains with them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prompt_bench.models.prefixes import PrefixShape


class PrefixEncoder(nn.Module):
    """[n_layers, 2, L, kv_dim] key/value prefixes.

    As THUDM/P-tuning-v2's PrefixEncoder: either one free table (nn.Embedding's N(0, 1) init), or with
    `projection` an L x d embedding reparameterised per layer by Linear(d, hidden) - tanh - Linear(hidden,
    n_layers * 2 * kv_dim), which the paper finds helps on some tasks and hurts on others.
    """

    def __init__(self, shape: PrefixShape, length: int, model_dim: int, projection: bool = False,
                 hidden: int = 512, seed: int = 0):
        super().__init__()
        self.shape, self.length = shape, length
        generator = torch.Generator().manual_seed(seed)
        width = shape.n_layers * 2 * shape.kv_dim
        if projection:
            self.table = nn.Parameter(torch.randn(length, model_dim, generator=generator))
            self.mlp = nn.Sequential(nn.Linear(model_dim, hidden), nn.Tanh(), nn.Linear(hidden, width))
            with torch.no_grad():  # seeded like the table, so a run is reproducible from its seed alone
                for layer in (self.mlp[0], self.mlp[2]):
                    bound = layer.in_features ** -0.5
                    layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
                    layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)
        else:
            self.table = nn.Parameter(torch.randn(length, width, generator=generator))
            self.mlp = None

    def forward(self) -> Tensor:
        flat = self.table if self.mlp is None else self.mlp(self.table)
        return flat.view(self.length, self.shape.n_layers, 2, self.shape.kv_dim).permute(1, 2, 0, 3)


def saved_head(tensors: dict[str, Tensor], device) -> nn.Linear | None:
    """The linear head a method saved as tensors["head.weight"] / ["head.bias"], or None (verbalizer)."""
    if "head.weight" not in tensors:
        return None
    weight = tensors["head.weight"]
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight, "bias": tensors["head.bias"]})
    return head.to(device)


def linear_head(in_features: int, n_classes: int, seed: int) -> nn.Linear:
    """P-tuning v2's classifier over the model's readout features, seeded."""
    head = nn.Linear(in_features, n_classes)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02, generator=generator)  # BERT's initializer_range
        head.bias.zero_()
    return head
