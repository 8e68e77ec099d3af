"""The only view of the model a black-box method gets: an API that scores prompts and bills each one.

One API call = one candidate prompt scored on the training batch, as BBT counts them. Scoring the dev
or test split (model selection and the final report) is free but counted separately, so a method can
never buy training signal from it unnoticed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prompt_bench.batching import EncodedSplit
from prompt_bench.errors import BudgetExhausted
from prompt_bench.models.backbone import Backbone, EncodedBatch


class BlackBoxAPI:
    def __init__(self, backbone: Backbone, train: EncodedSplit, budget: int, calls: int = 0):
        self._backbone = backbone
        self._train = train.batch()
        self.budget = budget
        self.calls = calls
        self.eval_calls = 0

    # Public facts a prompt-tuning service would publish (BBT scales its projection by them).
    @property
    def hidden_size(self) -> int:
        return self._backbone.hidden_size

    @property
    def device(self) -> torch.device:
        return self._backbone.device

    @property
    def embedding_std(self) -> float:
        return float(self._backbone.word_embeddings.weight.float().std())

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

    @torch.no_grad()
    def query(self, prompts: Tensor) -> Tensor:
        """Train-set class logits [P, B, C] for P prompts [P, L, d]; costs P API calls."""
        self.bill(prompts.shape[0])
        return self._backbone.label_logits(self._train, prompts)

    @torch.no_grad()
    def score(self, batch: EncodedBatch, prompt: Tensor | None) -> Tensor:
        """[B, C] logits of one prompt on an evaluation batch (dev/test; not billed to the budget)."""
        self.eval_calls += 1
        return self._backbone.label_logits(batch, None if prompt is None else prompt.unsqueeze(0))[0]
