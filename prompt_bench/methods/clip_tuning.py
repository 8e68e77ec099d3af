"""Clip-Tuning (Chai et al., Findings of EMNLP 2022, arXiv 2210.12050): BBT's derivative-free prompt learning
(CMA-ES over z, prompt = A z) whose reward for a candidate is a mixture over N frozen "thinned" networks: the
same model under N fixed, seeded dropout ("clipping") masks, the same units dropped at every call for the
whole run, survivors scaled by 1 / (1 - p) (prompt_bench/models/thinning.py).

Everything else is BBT's, reused rather than copied: projection, search, resume-by-replay of the told losses,
dev selection and checkpoint (`BBT.fit` running methods/search_loop.py with `ThinnedScoring`, which buys each
candidate's losses from the thinned networks).

API calls: the thinned networks belong to the service (`BlackBoxAPI.query(..., thinned=spec)`), which bills a
candidate scored on N thinned networks as N calls, since each thinned network is a full inference over the
train set. So `method.budget` is the same compute for bbt and clip_tuning: budget / N candidates here. Dev
selection and test scoring are free, as for bbt, on the full network (`inference: full`, default) or on the
ensemble of the thinned networks (`inference: ensemble`: their averaged probabilities).

Mixing (`method.mixing`): `mean_loss` tells the search the mean of the N per-network losses; `mean_prob`
the loss of the N networks' averaged class probabilities (ce: -log of the mean probability of the label).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import BlackBoxContext, Solution
from prompt_bench.methods.bbt import BBT
from prompt_bench.methods.search_loop import Scoring, prompt_loss
from prompt_bench.models.backbone import Backbone, EncodedBatch
from prompt_bench.models.thinning import ThinnedSpec, ensemble_logits, thinned_logits

MIXING = ("mean_loss", "mean_prob")
INFERENCE = ("full", "ensemble")


def thinned_spec(cfg: dict[str, Any], seed: int) -> ThinnedSpec:
    """The run's thinned networks: network k's masks derive from (run seed, k), fixed for the whole run."""
    return ThinnedSpec(n_networks=int(cfg["n_networks"]), clip_rate=float(cfg["clip_rate"]), sites=str(cfg["sites"]),
                       seed=int(seed))


def mixed_loss(logits: Tensor, labels: Tensor, kind: str, mixing: str, margin: float = 2.0) -> Tensor:
    """Per-candidate loss [P] from the thinned networks' logits [N, P, B, C]."""
    if mixing == "mean_loss":
        return torch.stack([prompt_loss(per_network, labels, kind, margin) for per_network in logits]).mean(0)
    return prompt_loss(ensemble_logits(logits), labels, kind, margin)  # loss of the averaged probabilities


class ThinnedScoring(Scoring):
    """Each candidate is scored on the N thinned networks and costs N calls."""

    def __init__(self, ctx: BlackBoxContext, api):
        super().__init__(ctx, api)
        self.spec = thinned_spec(ctx.method, ctx.seed)
        self.mixing, self.inference = str(ctx.method["mixing"]), str(ctx.method["inference"])
        self.calls_per_candidate = api.price(1, self.spec)

    def train(self, prompts, extra, z, generation) -> tuple[Tensor, Tensor]:
        logits = self.api.query(prompts, thinned=self.spec, **extra)  # [N, P, B, C]
        labels = self.api.train_labels
        losses = mixed_loss(logits, labels, self.kind, self.mixing, self.margin)
        return losses, (ensemble_logits(logits).argmax(-1) == labels).float().mean(1)

    def dev(self, batch: EncodedBatch, prompt: Tensor, extra: dict[str, Tensor]) -> Tensor:
        if self.inference == "full":
            return super().dev(batch, prompt, extra)
        return ensemble_logits(self.api.score(batch, prompt, thinned=self.spec, **extra))


@dataclass
class ClipTuningSolution(Solution):
    """BBT's solution; with `thinned` set (inference: ensemble), dev and test are scored by the thinned
    networks' averaged probabilities instead of the full network."""

    thinned: ThinnedSpec | None = None

    def scorer(self, backbone: Backbone):
        if self.thinned is None:
            return super().scorer(backbone)
        prompt = self.prompt.unsqueeze(0)
        return lambda batch: ensemble_logits(thinned_logits(backbone, batch, prompt, self.thinned)[:, 0])


class ClipTuning(BBT):
    access = "black_box"

    @classmethod
    def restore(cls, tensors, meta, method_cfg) -> Solution:
        # the thinned networks are the run's own masks: seeded by the run's seed, as in fit
        spec = thinned_spec(method_cfg, int(meta.get("seed", 0)))
        return ClipTuningSolution(prompt=tensors["prompt"], meta=meta,
                                  thinned=spec if meta.get("inference") == "ensemble" else None)

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        spec = thinned_spec(cfg, seed=0)  # n_networks, clip_rate, sites
        if cfg["mixing"] not in MIXING:
            raise ConfigError(f"method.mixing={cfg['mixing']} is unknown: use one of {', '.join(MIXING)}")
        if cfg["inference"] not in INFERENCE:
            raise ConfigError(f"method.inference={cfg['inference']} is unknown: use one of {', '.join(INFERENCE)}")
        if int(cfg["budget"]) < spec.n_networks:
            raise ConfigError(f"method.budget={cfg['budget']} cannot score one candidate: each costs "
                              f"method.n_networks={spec.n_networks} API calls")

    def _scoring(self, ctx: BlackBoxContext, api) -> Scoring:
        return ThinnedScoring(ctx, api)

    def fit(self, ctx: BlackBoxContext) -> Solution:
        solution = super().fit(ctx)
        cfg, spec = ctx.method, thinned_spec(ctx.method, ctx.seed)
        per_candidate = ctx.blackbox.price(1, spec)
        meta = {
            **solution.meta,
            "n_networks": spec.n_networks, "clip_rate": spec.clip_rate, "sites": spec.sites,
            "mixing": str(cfg["mixing"]), "inference": str(cfg["inference"]),
            "api_calls_per_candidate": per_candidate, "candidates_scored": int(solution.budget_used) // per_candidate,
        }
        return ClipTuningSolution(prompt=solution.prompt, tensors=solution.tensors, meta=meta,
                                  budget_used=solution.budget_used,
                                  thinned=spec if cfg["inference"] == "ensemble" else None)


METHOD = ClipTuning
