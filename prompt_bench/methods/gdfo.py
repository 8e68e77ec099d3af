"""GDFO (Han et al., Findings of ACL 2023): black-box prompt tuning that brings gradient descent in through
knowledge distillation and combines it with derivative-free search on the teacher.

Our reading (only the paper's abstract and introduction were readable here; every mechanism below is
ours where the paper's method section would have said): one intrinsic vector z is shared by both models;
the black-box teacher's prompt is A_t z (BBT's projection) and the white-box student's is A_s z.
- DFO (`method.gdfo.dfo`): CMA-ES (any `optimizer=`) on z, scored on the teacher, as BBT.
- Distillation (`method.gdfo.distill`): the student's top layers learn to reproduce the teacher's class
  distributions for the candidate prompts the teacher has scored (KL at temperature T), so the student
  becomes a differentiable stand-in for the teacher around the search's region. The targets are the
  teacher outputs the DFO queries already bought: distillation costs no extra API calls.
- Gradient descent (`method.gdfo.gd`): from the search's current recommendation, a few Adam steps on z
  through the student's task loss (gold labels, prompt A_s z).
- Harmonisation: the gradient-refined z is injected into the search as one member of the next generation
  (pycma's `inject`, so the generation keeps popsize members and CMA-ES updates on every generation), scored
  on the teacher with the others and told to the optimizer like any candidate, so CMA-ES adopts it only as far
  as the teacher confirms it (`method.gdfo.harmonize=inject`).
With `dfo=false` each generation is just the gradient-refined z scored on the teacher (one call).
API calls are counted exactly as for `bbt`: one per candidate scored on the teacher's train set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from prompt_bench import conf_files
from prompt_bench.batching import encode_split
from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import BlackBoxContext, Solution
from prompt_bench.methods.bbt import BBT
from prompt_bench.methods.search_loop import Scoring, run_search, selection_note
from prompt_bench.models import ModelSpec, build_backbone
from prompt_bench.models.backbone import Backbone
from prompt_bench.optim.dfo import Search, make_search
from prompt_bench.prompts.projection import RandomProjection


def student_spec(cfg: dict[str, Any]) -> ModelSpec:
    """`method.gdfo.student`: a conf/model name (minilm, smollm2, ...) or a local model folder."""
    name = str(cfg["student"])
    conf = conf_files.model_config(name)
    if conf is not None:
        return ModelSpec.from_config(conf)
    if Path(name).expanduser().is_dir():
        return ModelSpec.from_config({"name": Path(name).name, "family": str(cfg["student_family"]), "path": name})
    raise ConfigError(f"method.gdfo.student={name} is neither a model config ({', '.join(conf_files.names('model'))}) "
                      "nor a model folder")


class Student:
    """The white-box student: its prompt is A_s z; its top `layers` blocks learn from the teacher."""

    def __init__(self, backbone: Backbone, ctx: BlackBoxContext, cfg: dict[str, Any], n_tokens: int, sigma: float):
        self.backbone, self.cfg = backbone, cfg
        self.train = encode_split(ctx.train_examples, ctx.task, backbone, n_tokens, GDFO.placeholders(ctx.method)).batch()
        std = float(backbone.word_embeddings.weight.float().std())
        self.project = RandomProjection(ctx.method.intrinsic_dim, n_tokens, backbone.hidden_size, std, sigma,
                                        ctx.method.alpha, seed=ctx.seed + 7919, device=backbone.device)
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        blocks = backbone.transformer_layers()
        self.params = [p for block in list(blocks)[len(blocks) - int(cfg["student_layers"]):] for p in block.parameters()]
        for p in self.params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.params, lr=float(cfg["distill_lr"]), weight_decay=0.0) if self.params else None
        self.buffer_z: list[np.ndarray] = []
        self.buffer_logits: list[Tensor] = []

    def logits(self, z: Tensor) -> Tensor:
        """[P, B, C] student class logits on the train set for P intrinsic vectors."""
        return self.backbone.label_logits(self.train, self.project(z))

    def distill(self, z: np.ndarray, teacher_logits: Tensor, generation: int) -> float | None:
        """Add the teacher's outputs for these candidates to the buffer, then take the distillation steps."""
        self.buffer_z.extend(np.asarray(z))
        self.buffer_logits.extend(teacher_logits.float().cpu())
        if self.optimizer is None or not self.cfg["distill"]:
            return None
        rng = np.random.RandomState(int(self.cfg["seed"]) * 1_000_003 + generation)
        temperature, losses = float(self.cfg["temperature"]), []
        for _ in range(int(self.cfg["distill_steps"])):
            pick = rng.choice(len(self.buffer_z), size=min(int(self.cfg["distill_prompts"]), len(self.buffer_z)), replace=False)
            z_batch = torch.from_numpy(np.stack([self.buffer_z[i] for i in pick]))
            target = torch.stack([self.buffer_logits[i] for i in pick]).to(self.backbone.device)
            student = self.logits(z_batch).float()
            loss = F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(target / temperature, -1),
                            log_target=True, reduction="batchmean") * temperature ** 2
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        return float(np.mean(losses))

    def descend(self, z0: np.ndarray) -> tuple[np.ndarray, float]:
        """A few Adam steps on z through the student's task loss; returns (z, final student loss)."""
        z = torch.tensor(np.asarray(z0), dtype=torch.float32, requires_grad=True)
        optimizer = torch.optim.Adam([z], lr=float(self.cfg["gd_lr"]))
        loss = torch.tensor(float("nan"))
        for _ in range(int(self.cfg["gd_steps"])):
            loss = F.cross_entropy(self.logits(z[None])[0].float(), self.train.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        for p in self.params:  # the student's own gradients from this descent are not training signal
            p.grad = None
        return z.detach().double().numpy(), loss.item()


class _Harmonized(Search):
    """The search the BBT loop sees: before each generation the student's gradient-refined point is
    injected into the DFO optimizer's generation (or, with dfo off, is the whole generation). Its checkpoint
    keeps every suggestion, so a resumed run replays them instead of descending again."""

    def __init__(self, search, student: Student, cfg: dict[str, Any]):
        self.search, self.student, self.cfg = search, student, cfg
        self.dim = search.dim
        self.popsize = search.popsize if cfg["dfo"] else 1
        self.generation = 0
        self.suggested: list[list[float] | None] = []  # per generation, for the replay
        self.replaying: list[list[float] | None] | None = None
        self._current = np.zeros(search.dim)
        self.last_asked: np.ndarray | None = None
        self.last_student_loss: float | None = None

    def ask(self, n: int | None = None) -> np.ndarray:
        z_gd = None
        if self.replaying is not None:
            saved = self.replaying[self.generation]
            z_gd = None if saved is None else np.asarray(saved)
        elif self.cfg["gd"] and self.generation >= int(self.cfg["gd_warmup"]):
            z_gd, self.last_student_loss = self.student.descend(self.recommend())
        if self.replaying is None:
            self.suggested.append(None if z_gd is None else [float(x) for x in z_gd])
        if not self.cfg["dfo"]:
            self._current = z_gd if z_gd is not None else self._current
            self.last_asked = self._current[None].copy()
            return self.last_asked
        if z_gd is not None and self.cfg["harmonize"] == "inject":
            self.search.inject(z_gd)
        self.last_asked = self.search.ask(n)
        return self.last_asked

    def tell(self, losses) -> None:
        if self.cfg["dfo"]:
            self.search.tell(losses)
        self.generation += 1

    def recommend(self) -> np.ndarray:
        return self.search.recommend() if self.cfg["dfo"] else self._current

    def mean(self) -> np.ndarray | None:
        return self.search.mean() if self.cfg["dfo"] else None

    def checkpoint_meta(self) -> dict:
        return {"suggested": self.suggested}

    def begin_replay(self, meta: dict) -> None:
        self.replaying = meta["suggested"]

    def end_replay(self, meta: dict) -> None:
        self.suggested = list(meta["suggested"])
        self.replaying = None


class _DistillingScoring(Scoring):
    """BBT's scoring, and every teacher answer goes to the student's distillation buffer (and into the
    checkpoint, so a resumed run replays the student's training exactly)."""

    def __init__(self, ctx, api, search: _Harmonized):
        super().__init__(ctx, api)
        self.search = search
        self.teacher_logits: list[list] = []

    def train(self, prompts, extra, z, generation) -> tuple[Tensor, Tensor]:
        logits = self.api.query(prompts, **extra)
        self.teacher_logits.append(logits.float().cpu().tolist())
        distill_loss = self.search.student.distill(z, logits, generation)
        record = {} if distill_loss is None else {"train/distill_kl": distill_loss}
        if self.search.last_student_loss is not None:
            record["train/student_loss"] = self.search.last_student_loss
        if record:
            self.ctx.tracker.log(record, step=self.api.calls)
        return self.loss(logits), (logits.argmax(-1) == self.api.train_labels).float().mean(1)

    def checkpoint_meta(self) -> dict:
        return {"teacher_logits": self.teacher_logits}

    def replay(self, meta: dict, generation: int, z: np.ndarray) -> None:
        logits = meta["teacher_logits"][generation]
        self.teacher_logits.append(logits)
        self.search.student.distill(z, torch.tensor(logits), generation)


class GDFO(BBT):
    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        g = cfg["gdfo"]
        if not (g["dfo"] or g["gd"]):
            raise ConfigError("method.gdfo.dfo and method.gdfo.gd are both off: nothing would search the prompt")
        if g["harmonize"] not in ("inject", "none"):
            raise ConfigError(f"method.gdfo.harmonize={g['harmonize']} is not one of inject, none")
        student_spec(g)

    def fit(self, ctx: BlackBoxContext) -> Solution:
        cfg, api, g = ctx.method, ctx.blackbox, dict(ctx.method["gdfo"], seed=ctx.seed)
        if ctx.train_examples is None:
            raise ConfigError("GDFO needs the train examples as text to encode them for its student")
        dim, n_tokens = cfg.intrinsic_dim, cfg.n_prompt_tokens
        sigma = ctx.method.sigma
        teacher_projection = RandomProjection(dim, n_tokens, api.hidden_size, api.embedding_std, sigma=sigma,
                                              alpha=cfg.alpha, seed=ctx.seed, device=api.device)
        torch.manual_seed(ctx.seed)
        student_backbone = build_backbone(student_spec(g), device=str(api.device))
        if g.get("student_depth"):
            student_backbone.keep_bottom_layers(int(g["student_depth"]))
        student = Student(student_backbone, ctx, g, n_tokens, sigma)
        search = _Harmonized(make_search(ctx.optimizer, dim, budget=api.budget, seed=ctx.seed, sigma=sigma), student, g)

        state = run_search(ctx, search, lambda z: (teacher_projection(z), {}), _DistillingScoring(ctx, api, search))
        best_z = torch.from_numpy(state.best_z)
        suggestions = sum(s is not None for s in search.suggested)
        return Solution(
            prompt=teacher_projection(best_z[None])[0].detach(), tensors={"z": best_z},
            meta={"best_dev": state.best_dev, "best_calls": state.best_calls, "projection_std": teacher_projection.std,
                  "student": student_backbone.spec.name, "student_blocks": len(student_backbone.transformer_layers()),
                  "student_trained_tensors": len(student.params),
                  "gd_suggestions": suggestions, "distill": bool(g["distill"]), "gd": bool(g["gd"]), "dfo": bool(g["dfo"]),
                  "harmonize": str(g["harmonize"]), "selected": state.best_source, "selection": selection_note(cfg),
                  **({"cma_updates": search.search.updates} if hasattr(search.search, "updates") else {})},
            budget_used=api.calls,
        )


METHOD = GDFO
