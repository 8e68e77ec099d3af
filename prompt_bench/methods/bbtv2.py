"""BBTv2 (Sun et al., EMNLP 2022): a prompt at every layer, each in its own random subspace (prompt_l =
A_l z_l) with its own derivative-free search, optimised layer by layer in turn ("divide and conquer"),
the model reached only through the billed BlackBoxAPI.

Follows txsun1997/Black-Box-Tuning deepbbt.py:
- schedule: rounds over the layers, one generation (popsize API calls) per layer per round, then the
  next layer; the other layers are held at their best candidate so far (cma's `es.result.xbest`);
- layer l's prompt is added to the hidden states at the prompt positions as they enter layer l;
- A_l ~ N(0, alpha * std_l / (sqrt(d) * sigma)), std_0 = the word embeddings' std, std_l (l >= 1) = the
  std of the hidden states entering layer l, outliers clipped (5 rounds at +-3 std).
Ours: layer 0's prompt is the input soft prompt (inserted as input embeddings, exactly as our BBT), so
with z_l = 0 for l >= 1 BBTv2 is BBT; the hidden-state statistics come from the service
(`api.layer_hidden_std()`, prompt-free, real tokens only); the whole budget is spent (deepbbt.py stops
after the last complete round); each layer's search and projection has its own seed; dev selection is
BBT's (best dev score among the searches' recommendation and the best-train candidate).

Shared prefix (method.prefix_cache): while layer l is searched, every candidate of a generation holds the other
layers at their incumbents, so the hidden states entering layer l on the training batch are the same for all of
them; the API then runs the embeddings and layers 0..l-1 once per chunk of examples and only layers l.. per
candidate (`BlackBoxAPI.query(prefix_cache=True)`, `Backbone.label_logits(shared_layers=l)`). Each candidate is
still billed one call; the losses are the uncached ones bit for bit on one CPU thread (tests/test_bbtv2_prefix_cache.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from prompt_bench.config_values import flag
from prompt_bench.methods.base import BlackBoxContext, Method, Solution
from prompt_bench.methods.bbt import BBT
from prompt_bench.methods.search_loop import Scoring, run_search, selection_note
from prompt_bench.models.backbone import Backbone, EncodedBatch
from prompt_bench.models.deep_prompts import DEEP_PROMPT, deep_prompt_hooks
from prompt_bench.optim.dfo import PYCMA, Search, make_search
from prompt_bench.prompts.projection import RandomProjection


def layer_seed(seed: int, layer: int) -> int:
    """Layer 0 keeps the run's seed (its projection is BBT's); the others get independent streams."""
    return seed if layer == 0 else int(np.random.SeedSequence([seed, layer]).generate_state(1)[0])


class LayerwiseSearch(Search):
    """One ask/tell search per layer behind CMASearch's interface, over the concatenation
    z = [z_0, ..., z_{n-1}] (dim n_layers * d). Generation g searches layer (g // generations_per_layer)
    % n_layers; its candidates vary that layer's z and hold every other layer at its incumbent (the
    lowest-loss z that layer's search has produced). A deterministic function of the seed and of the
    told losses, like CMASearch, so replaying the losses re-creates it.

    With pycma (optimizer=cma) every layer's CMA-ES is seeded with the run's seed and all draw from one shared
    normal stream, as deepbbt.py:708-717's CMA-ES instances do from numpy's global stream; nevergrad
    optimizers get one independent seed per layer."""

    def __init__(self, optimizer_cfg, n_layers: int, dim: int, budget: int, seed: int, sigma: float,
                 generations_per_layer: int = 1):
        self.n_layers, self.layer_dim, self.dim = n_layers, dim, n_layers * dim
        self.generations_per_layer = generations_per_layer
        per_layer = max(1, math.ceil(budget / n_layers))
        if str(optimizer_cfg["name"]) in PYCMA:
            stream = np.random.RandomState(seed)
            self.searches = [make_search(optimizer_cfg, dim, per_layer, seed, sigma, stream) for _ in range(n_layers)]
        else:
            self.searches = [make_search(optimizer_cfg, dim, per_layer, layer_seed(seed, l), sigma)
                             for l in range(n_layers)]
        self.popsize = self.searches[0].popsize
        self.incumbent = np.zeros((n_layers, dim))
        self.incumbent_loss = np.full(n_layers, np.inf)
        self.layers: list[int] = []  # the layer each told generation searched
        self.layer: int | None = None  # the layer of the generation being asked
        self._pending: np.ndarray | None = None

    def layer_of(self, generation: int) -> int:
        return (generation // self.generations_per_layer) % self.n_layers

    def ask(self, n: int | None = None) -> np.ndarray:
        self.layer = self.layer_of(len(self.layers))
        self._pending = self.searches[self.layer].ask(n)
        full = np.repeat(self.incumbent[None], len(self._pending), axis=0)
        full[:, self.layer] = self._pending
        return full.reshape(len(self._pending), self.dim)

    def tell(self, losses) -> None:
        self.searches[self.layer].tell(losses)
        best = int(np.argmin(losses))
        if float(losses[best]) < self.incumbent_loss[self.layer]:
            self.incumbent_loss[self.layer] = float(losses[best])
            self.incumbent[self.layer] = self._pending[best]
        self.layers.append(self.layer)
        self._pending = None

    # the checkpoint also says which layer each generation searched, and a resumed run must search the same
    def checkpoint_meta(self) -> dict:
        return {"layers": list(self.layers)}

    def begin_replay(self, meta: dict) -> None:
        if len(meta["layers"]) != len(meta["losses"]):
            raise RuntimeError("corrupt BBTv2 checkpoint: one layer per told generation expected")

    def end_replay(self, meta: dict) -> None:
        for generation, (saved, replayed) in enumerate(zip(meta["layers"], self.layers)):
            if saved != replayed:
                raise RuntimeError(f"BBTv2 checkpoint: generation {generation} searched layer {saved}, "
                                   f"but this configuration's schedule searches layer {replayed}")

    def recommend(self) -> np.ndarray:
        """Every layer at its incumbent (deepbbt.py:719 holds each layer at its CMA-ES `result.xbest`)."""
        return self.incumbent.reshape(self.dim).copy()

    def mean(self) -> np.ndarray | None:
        """Each searched layer's distribution mean; unsearched layers at 0 (None for nevergrad searches)."""
        searched = set(self.layers)
        means = [self.searches[l].mean() if l in searched else self.incumbent[l] for l in range(self.n_layers)]
        return None if any(m is None for m in means) else np.stack(means).reshape(self.dim)


class DeepPromptSolution(Solution):
    """A shallow input prompt [L, d] plus `tensors["deep_prompt"]` [n_layers, L, d] added at each layer."""

    def scorer(self, backbone: Backbone):
        prompt = self.prompt.unsqueeze(0)
        extras = {DEEP_PROMPT: self.tensors["deep_prompt"].unsqueeze(0).to(backbone.device)}

        def score(batch: EncodedBatch) -> Tensor:
            with deep_prompt_hooks(backbone):
                return backbone.label_logits(batch, prompt, extras)[0]

        return score


class PrefixCachedScoring(Scoring):
    """Scoring whose train queries let the API compute the layers every candidate shares once (method.prefix_cache)."""

    def train(self, prompts: Tensor, extra: dict[str, Tensor], z: np.ndarray, generation: int) -> tuple[Tensor, Tensor]:
        logits = self.api.query(prompts, **extra, prefix_cache=True)
        return self.loss(logits), (logits.argmax(-1) == self.api.train_labels).float().mean(1)


class BBTv2(Method):
    access = "black_box"

    @classmethod
    def restore(cls, tensors, meta, method_cfg) -> Solution:
        return DeepPromptSolution(prompt=tensors["prompt"], tensors={"deep_prompt": tensors["deep_prompt"]}, meta=meta)

    @classmethod
    def placeholders(cls, cfg):
        return BBT.placeholders(cfg)

    @classmethod
    def check(cls, cfg) -> None:
        BBT.check(cfg)

    def fit(self, ctx: BlackBoxContext) -> Solution:
        cfg, api = ctx.method, ctx.blackbox
        dim, n_tokens, n_layers = cfg.intrinsic_dim, cfg.n_prompt_tokens, api.num_layers
        stds = [api.embedding_std, *api.layer_hidden_std()[1:]]
        projections = [
            RandomProjection(dim, n_tokens, api.hidden_size, std, sigma=cfg.sigma,
                             alpha=cfg.alpha, seed=layer_seed(ctx.seed, layer), device=api.device)
            for layer, std in enumerate(stds)
        ]

        def encode(z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            """[n, n_layers * d] -> input prompts [n, L, width] and deep prompts [n, n_layers, L, width]."""
            z = z.view(z.shape[0], n_layers, dim)
            prompts = projections[0](z[:, 0])
            deep = torch.stack([torch.zeros_like(prompts), *(projections[l](z[:, l]) for l in range(1, n_layers))], dim=1)
            return prompts, {"deep": deep}

        search = LayerwiseSearch(ctx.optimizer, n_layers, dim, budget=api.budget, seed=ctx.seed, sigma=cfg.sigma,
                                 generations_per_layer=cfg.generations_per_layer)
        scoring = PrefixCachedScoring(ctx, api) if flag("method.prefix_cache", cfg["prefix_cache"]) else Scoring(ctx, api)
        state = run_search(ctx, search, encode, scoring)
        best_z = torch.from_numpy(state.best_z)
        prompts, extra = encode(best_z[None])
        return DeepPromptSolution(
            prompt=prompts[0].detach(),
            tensors={"z": best_z.view(n_layers, dim), "deep_prompt": extra["deep"][0].detach()},
            meta={"best_dev": state.best_dev, "best_calls": state.best_calls, "n_layers": n_layers,
                  "projection_std": [p.std for p in projections],
                  "deep_prompt": "prompt = layer 0 (input soft prompt); deep_prompt[l] is added to the hidden states "
                                 "at the prompt positions entering layer l (row 0 is zero)",
                  "selected": state.best_source, "selection": selection_note(cfg)},
            budget_used=api.calls,
        )


METHOD = BBTv2
