"""The only view of the model a black-box method gets: an API that scores prompts and bills each one.

One API call = one candidate prompt scored on the training batch, as BBT counts them. Scoring the dev
or test split (model selection and the final report) is free but counted separately, so a method can
never buy training signal from it unnoticed.

Thinned networks (Clip-Tuning) belong to the service too: `query(prompts, thinned=ThinnedSpec(...))` scores
each prompt on N fixed dropout-masked copies of the model and costs N calls per prompt, because each thinned
network is a full inference over the training batch (`price` is the one place this rule lives). So a budget
buys the same compute whichever method spends it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prompt_bench.batching import EncodedSplit
from prompt_bench.errors import BudgetExhausted
from prompt_bench.models.backbone import Backbone, EncodedBatch
from prompt_bench.models.deep_prompts import DEEP_PROMPT, clipped_std, deep_prompt_hooks, layer_inputs
from prompt_bench.models.thinning import ThinnedSpec, thinned_logits


class BlackBoxAPI:
    def __init__(self, backbone: Backbone, train: EncodedSplit, budget: int, calls: int = 0):
        self._backbone = backbone
        self._train = train.batch()
        self.budget = budget
        self.calls = calls
        self.eval_calls = 0
        self._layer_std: list[float] | None = None

    # Public facts a prompt-tuning service would publish (BBT scales its projection by them).
    @property
    def hidden_size(self) -> int:
        return self._backbone.hidden_size

    @property
    def device(self) -> torch.device:
        return self._backbone.device

    @property
    def embedding_std(self) -> float:
        return float(self._backbone.word_embeddings.weight.float().std(unbiased=False))  # np.std, as bbt.py:283

    @property
    def num_layers(self) -> int:
        return len(self._backbone.transformer_layers())

    def layer_hidden_std(self) -> list[float]:
        """Std of the hidden states entering each transformer layer [n_layers] on the training inputs.

        A fact the service publishes about its model (BBTv2 sizes each layer's random projection by it,
        as deepbbt.py does), computed once by the service itself, without any prompt, not billed. Real
        tokens only: examples are forwarded in groups of equal length, so no padding is counted; at most
        the first 256 training examples. Outliers are clipped as deepbbt.py does (5 rounds at +-3 std).
        """
        if self._layer_std is None:
            lengths = self._train.attention_mask.sum(1)
            keep = torch.arange(len(lengths), device=lengths.device)[:256]
            with torch.no_grad(), layer_inputs(self._backbone) as recorded:
                for length in torch.unique(lengths[keep]).tolist():
                    rows = keep[lengths[keep] == length]
                    t = self._train
                    self._backbone.label_logits(EncodedBatch(t.input_ids[rows], t.attention_mask[rows],
                                                             t.target_pos[rows], t.labels[rows], verbalizer=t.verbalizer))
            self._layer_std = [clipped_std(torch.cat([h.flatten() for h in layer])) for layer in recorded]
        return list(self._layer_std)

    @property
    def remaining(self) -> int:
        return self.budget - self.calls

    @property
    def train_labels(self) -> Tensor:
        return self._train.labels

    def bill(self, n: int) -> None:
        """Charge n API calls, or refuse (charging nothing) if that would pass the budget."""
        if self.calls + n > self.budget:
            raise BudgetExhausted(
                f"budget exhausted: {self.calls} of {self.budget} API calls spent and {n} more asked for; "
                "raise method.budget"
            )
        self.calls += n

    def price(self, n_prompts: int, thinned: ThinnedSpec | None = None) -> int:
        """API calls that scoring n_prompts on the train set costs: one per prompt per network scored."""
        return n_prompts * (1 if thinned is None else int(thinned.n_networks))

    @torch.no_grad()
    def query(self, prompts: Tensor, deep: Tensor | None = None, thinned: ThinnedSpec | None = None,
              prefix_cache: bool = False) -> Tensor:
        """Train-set class logits [P, B, C] for P prompts [P, L, d]; costs P API calls.

        `deep` [P, n_layers, L, d]: per-layer prompts, deep[:, l] added to the hidden states at the
        prompt positions as they enter layer l (BBTv2); a candidate with its deep prompt is still one call.
        `thinned`: score every prompt on each of the spec's N thinned networks instead of the full model:
        logits [N, P, B, C], costing N x P calls (see `price`).
        `prefix_cache`: the service's own saving, invisible in the logits and the bill: when every candidate has
        the same input prompt and the same deep prompts below some layer l (bit for bit; `shared_prefix`), the
        layers below l run once for all of them (`Backbone.label_logits(shared_layers=l)`).
        """
        self._check_thinned(deep, thinned)
        self.bill(self.price(prompts.shape[0], thinned))
        if thinned is not None:
            return thinned_logits(self._backbone, self._train, prompts, thinned)
        return self._logits(self._train, prompts, deep, shared_prefix(prompts, deep) if prefix_cache else 0)

    @staticmethod
    def _check_thinned(deep: Tensor | None, thinned: ThinnedSpec | None) -> None:
        if thinned is not None and deep is not None:
            raise ValueError("thinned networks do not take deep prompts")

    def _logits(self, batch: EncodedBatch, prompts: Tensor | None, deep: Tensor | None, shared_layers: int = 0) -> Tensor:
        if deep is None:
            return self._backbone.label_logits(batch, prompts)
        if prompts is None or deep.shape != (prompts.shape[0], self.num_layers, *prompts.shape[1:]):
            raise ValueError(f"deep prompts must be [P, {self.num_layers}, L, d] for prompts [P, L, d], got "
                             f"{tuple(deep.shape)} for {None if prompts is None else tuple(prompts.shape)}")
        with deep_prompt_hooks(self._backbone):
            return self._backbone.label_logits(batch, prompts, extras={DEEP_PROMPT: deep.to(self.device)},
                                               shared_layers=shared_layers)

    @torch.no_grad()
    def score(self, batch: EncodedBatch, prompt: Tensor | None, deep: Tensor | None = None,
              thinned: ThinnedSpec | None = None) -> Tensor:
        """[B, C] logits of one prompt [L, d] (with its deep prompt [n_layers, L, d], if any) on an
        evaluation batch (dev/test; not billed to the budget). With `thinned`: [N, B, C], one row per thinned
        network (counted as N evaluation calls)."""
        self._check_thinned(deep, thinned)
        if thinned is not None:
            self.eval_calls += self.price(1, thinned)
            return thinned_logits(self._backbone, batch, prompt.unsqueeze(0), thinned)[:, 0]
        self.eval_calls += 1
        return self._logits(batch, None if prompt is None else prompt.unsqueeze(0),
                            None if deep is None else deep.unsqueeze(0))[0]


def shared_prefix(prompts: Tensor, deep: Tensor | None) -> int:
    """How many transformer layers compute the same thing for every candidate: the first layer l whose deep prompt
    differs between candidates (layer 0: the input prompt), or n_layers when none does; 0 for a single candidate
    or without deep prompts. Compared bit for bit (0.0 and -0.0 differ), so sharing never changes a result."""
    if deep is None or prompts.shape[0] < 2:
        return 0

    def same(values: Tensor) -> bool:
        raw = values.detach().contiguous().view(torch.uint8)
        return bool((raw == raw[:1]).all())

    if not (same(prompts) and same(deep[:, 0])):
        return 0
    return next((layer for layer in range(1, deep.shape[1]) if not same(deep[:, layer])), deep.shape[1])
