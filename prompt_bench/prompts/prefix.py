"""P-tuning v2's trainable per-layer prefixes, and the linear classification head it trains with them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prompt_bench.models.prefixes import PrefixShape


class PrefixEncoder(nn.Module):
    """[n_layers, 2, L, kv_dim] key/value prefixes.

    As THUDM/P-tuning-v2's PrefixEncoder: either one free table (N(0, init_std^2): 1 is nn.Embedding's own init,
    0.02 what the reference's from_pretrained re-initialises it to, BERT's initializer_range), or with
    `projection` an L x d embedding reparameterised per layer by Linear(d, hidden) - tanh - Linear(hidden,
    n_layers * 2 * kv_dim), which the paper finds helps on some tasks and hurts on others.
    """

    def __init__(self, shape: PrefixShape, length: int, model_dim: int, projection: bool = False,
                 hidden: int = 512, seed: int = 0, init_std: float = 1.0):
        super().__init__()
        self.shape, self.length = shape, length
        generator = torch.Generator().manual_seed(seed)
        width = shape.n_layers * 2 * shape.kv_dim
        if projection:
            self.table = nn.Parameter(torch.randn(length, model_dim, generator=generator) * init_std)
            self.mlp = nn.Sequential(nn.Linear(model_dim, hidden), nn.Tanh(), nn.Linear(hidden, width))
            with torch.no_grad():  # seeded like the table, so a run is reproducible from its seed alone
                for layer in (self.mlp[0], self.mlp[2]):
                    bound = layer.in_features ** -0.5
                    layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
                    layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)
        else:
            self.table = nn.Parameter(torch.randn(length, width, generator=generator) * init_std)
            self.mlp = None

    def forward(self) -> Tensor:
        flat = self.table if self.mlp is None else self.mlp(self.table)
        return flat.view(self.length, self.shape.n_layers, 2, self.shape.kv_dim).permute(1, 2, 0, 3)


class ClassifierHead(nn.Linear):
    """P-tuning v2's classifier: dropout, then a linear layer over the features the backbone hands a head.

    With `pooler` (weight, bias) it is the reference head of THUDM/P-tuning-v2 (model/sequence_classification.py):
    the backbone hands it the first token's ([CLS]) last hidden state (`reads = "first_token"`), which goes through
    the model's frozen pooler (dense + tanh), dropout and the linear layer. The pooler is kept as buffers: saved
    with the head, never trained. Dropout acts only in train mode (the training loop switches it)."""

    def __init__(self, in_features: int, n_classes: int, seed: int, dropout: float = 0.0,
                 pooler: tuple[Tensor, Tensor] | None = None):
        super().__init__(in_features, n_classes)
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            self.weight.normal_(0.0, 0.02, generator=generator)  # BERT's initializer_range
            self.bias.zero_()
        self.dropout = nn.Dropout(dropout)
        self.reads = "features"
        if pooler is not None:
            self.register_buffer("pooler_weight", pooler[0].clone())
            self.register_buffer("pooler_bias", pooler[1].clone())
            self.reads = "first_token"
        self.eval()

    def forward(self, features: Tensor) -> Tensor:
        if self.reads == "first_token":
            features = torch.tanh(nn.functional.linear(features, self.pooler_weight.to(features.dtype),
                                                       self.pooler_bias.to(features.dtype)))
        return super().forward(self.dropout(features))


def saved_head(tensors: dict[str, Tensor], device) -> nn.Linear | None:
    """The head a method saved as tensors["head.weight"] / ["head.bias"] (and ["head.pooler_weight"] /
    ["head.pooler_bias"] for the reference head), or None (verbalizer)."""
    if "head.weight" not in tensors:
        return None
    weight = tensors["head.weight"]
    pooler = (tensors["head.pooler_weight"], tensors["head.pooler_bias"]) if "head.pooler_weight" in tensors else None
    head = ClassifierHead(weight.shape[1], weight.shape[0], seed=0, pooler=pooler)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(tensors["head.bias"])
    return head.to(device)


def linear_head(in_features: int, n_classes: int, seed: int, dropout: float = 0.0,
                pooler: tuple[Tensor, Tensor] | None = None) -> ClassifierHead:
    """P-tuning v2's classifier over the model's readout features (or, with `pooler`, over its pooled [CLS]),
    seeded: N(0, 0.02) weights, zero bias."""
    return ClassifierHead(in_features, n_classes, seed, dropout, pooler)
