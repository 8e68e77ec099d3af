"""The three recyclers of Lester et al. (2022): maps from a source model's input-embedding space to a target's,
learned from the embeddings of the same words in both models. They see embeddings, word lists and the source
prompt only: no task, no data split, no forward pass of either model.

* `v2v_lin`: a linear projection W [d_s, d_t] minimising ||S W - T||^2 (least squares, no bias, as the
  reference's `TFLstSqRecycler`), applied to every prompt vector.
* `v2v_nn`: a 2-layer MLP, Dense(hidden_scale * d_t) -> ReLU -> Dense(d_t), trained to map S to T with the L2
  loss (optax.l2_loss: half the squared error, averaged), Adam lr 3e-4, batch 50, 25 epochs, a fresh shuffle
  every epoch, as `JaxRecycler` (flax Dense init: truncated LeCun-normal kernels, zero biases).
* `lin_comb`: each prompt vector written as a least-squares combination of the source word embeddings
  (min-norm solution of S^T x = p; underdetermined, since there are more words than dimensions), and the
  same weights applied to the target word embeddings (`LinearCombinationRecycler`).

In exact arithmetic `lin_comb` and `v2v_lin` are the same map, p -> p pinv(S) T (both least-squares solutions
are the pseudo-inverse ones); the reference ships both, and so do we. Solves run in float64 on the CPU.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor

from prompt_bench import progress

log = logging.getLogger(__name__)

RECYCLERS = ("v2v_lin", "v2v_nn", "lin_comb")


def _f64(x: Tensor) -> Tensor:
    return x.detach().to(device="cpu", dtype=torch.float64)


def _lstsq(a: Tensor, b: Tensor) -> Tensor:
    """Minimum-norm least-squares solution x of a @ x = b (gelsd: SVD-based, fine for rank-deficient a)."""
    return torch.linalg.lstsq(a, b, driver="gelsd").solution


class Recycler:
    """Fit on paired word embeddings (source [V, d_s], target [V, d_t]); then map [*, d_s] -> [*, d_t]."""

    name = ""

    def fit(self, source: Tensor, target: Tensor) -> "Recycler":
        raise NotImplementedError

    def __call__(self, vectors: Tensor) -> Tensor:
        raise NotImplementedError


class LinearRecycler(Recycler):
    name = "v2v_lin"

    def __init__(self) -> None:
        self.projection: Tensor | None = None  # [d_s, d_t]

    def fit(self, source: Tensor, target: Tensor) -> "LinearRecycler":
        self.projection = _lstsq(_f64(source), _f64(target))
        return self

    def __call__(self, vectors: Tensor) -> Tensor:
        return (_f64(vectors) @ self.projection).float()


class MLPRecycler(Recycler):
    name = "v2v_nn"

    def __init__(self, hidden_scale: int = 4, lr: float = 3e-4, batch_size: int = 50, epochs: int = 25,
                 seed: int = 0) -> None:
        self.hidden_scale, self.lr, self.batch_size, self.epochs, self.seed = hidden_scale, lr, batch_size, epochs, seed
        self.net: torch.nn.Sequential | None = None
        self.final_loss: float | None = None

    @staticmethod
    def _dense(n_in: int, n_out: int, generator: torch.Generator) -> torch.nn.Linear:
        # flax's Dense default: kernel ~ truncated normal (2 std) scaled to variance 1 / fan_in, bias 0.
        layer = torch.nn.utils.skip_init(torch.nn.Linear, n_in, n_out)  # no draw from the global RNG
        std = math.sqrt(1.0 / n_in) / 0.87962566103423978  # the std of a unit normal truncated at +-2
        with torch.no_grad():
            layer.weight.copy_(torch.nn.init.trunc_normal_(torch.empty(n_out, n_in), std=std, a=-2 * std, b=2 * std,
                                                           generator=generator))
            layer.bias.zero_()
        return layer

    def fit(self, source: Tensor, target: Tensor) -> "MLPRecycler":
        source = source.detach().float().cpu()
        target = target.detach().float().cpu()
        generator = torch.Generator().manual_seed(self.seed)
        d_in, d_out = source.shape[1], target.shape[1]
        self.net = torch.nn.Sequential(
            self._dense(d_in, self.hidden_scale * d_out, generator), torch.nn.ReLU(),
            self._dense(self.hidden_scale * d_out, d_out, generator),
        )
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        loss = torch.tensor(float("nan"))
        bar = progress.bar(self.epochs, "fit the v2v_nn map", unit="epochs")
        with torch.enable_grad():
            for _ in range(self.epochs):
                bar.update(1)
                order = torch.randperm(len(source), generator=generator)
                for start in range(0, len(source), self.batch_size):
                    index = order[start : start + self.batch_size]
                    loss = 0.5 * (self.net(source[index]) - target[index]).pow(2).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        self.final_loss = float(loss.detach())
        self.net.requires_grad_(False)
        return self

    @torch.no_grad()
    def __call__(self, vectors: Tensor) -> Tensor:
        return self.net(vectors.detach().float().cpu())


class LinearCombinationRecycler(Recycler):
    name = "lin_comb"

    def __init__(self) -> None:
        self.source_support: Tensor | None = None  # [V, d_s]
        self.target_support: Tensor | None = None  # [V, d_t]

    def fit(self, source: Tensor, target: Tensor) -> "LinearCombinationRecycler":
        self.source_support, self.target_support = _f64(source), _f64(target)
        return self

    def weights(self, vectors: Tensor) -> Tensor:
        """[P, V]: each vector as a combination of the source word embeddings (S^T w = p, min-norm w)."""
        return _lstsq(self.source_support.T, _f64(vectors).T).T

    def __call__(self, vectors: Tensor) -> Tensor:
        return (self.weights(vectors) @ self.target_support).float()


def make_recycler(name: str, seed: int = 0, nn: dict[str, Any] | None = None) -> Recycler:
    if name == "v2v_lin":
        return LinearRecycler()
    if name == "lin_comb":
        return LinearCombinationRecycler()
    if name == "v2v_nn":
        nn = dict(nn or {})
        return MLPRecycler(hidden_scale=int(nn.get("hidden_scale", 4)), lr=float(nn.get("lr", 3e-4)),
                           batch_size=int(nn.get("batch_size", 50)), epochs=int(nn.get("epochs", 25)), seed=seed)
    raise ValueError(f"unknown recycler '{name}': use one of {', '.join(RECYCLERS)}")


def map_error(recycler: Recycler, source: Tensor, target: Tensor) -> dict[str, float]:
    """How well the map sends source word embeddings to the target's: mean squared error, relative error
    (squared error over the target's variance around its mean: 1.0 is no better than predicting the mean
    vector) and mean cosine similarity between mapped and true target embeddings."""
    predicted, target = _f64(recycler(source)), _f64(target)
    error = (predicted - target).pow(2)
    spread = (target - target.mean(0)).pow(2).sum()
    cosine = torch.nn.functional.cosine_similarity(predicted, target, dim=1)
    return {"mse": float(error.mean()), "relative_error": float(error.sum() / spread) if spread > 0 else float("nan"),
            "cosine": float(cosine.mean())}
