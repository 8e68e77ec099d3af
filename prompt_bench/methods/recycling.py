"""Prompt Recycling (Lester et al., 2022): a soft prompt trained on another model, mapped to this run's model.

Nothing is trained on the target and no task data is read: `fit` uses the method config, the target backbone's
tokenizer and input embeddings, and the source prompt with its model's tokenizer and input embeddings. The
recycled prompt [L, d_target] is then evaluated (dev and test) and saved like any prompt_tuning prompt.
"""

from __future__ import annotations

from prompt_bench.errors import ConfigError, ModelError
from prompt_bench.methods.base import Method, Solution, WhiteBoxContext
from prompt_bench.recycling import RECYCLERS, load_embeddings, read_source, recycle, source_model_spec
from prompt_bench.recycling.source import prompt_shape


class Recycling(Method):
    access = "none"  # trains nothing on the target model

    @classmethod
    def check(cls, cfg) -> None:
        if cfg["recycler"] not in RECYCLERS:
            raise ConfigError(f"unknown method.recycler '{cfg['recycler']}': use one of {', '.join(RECYCLERS)}")
        if float(cfg["nn"]["lr"]) <= 0:
            raise ConfigError(f"method.nn.lr must be positive, got {cfg['nn']['lr']}")
        # The source prompt and its model must be findable before any model is loaded.
        source_model_spec(read_source(cfg["source"]), cfg.get("source_model"))

    @classmethod
    def prompt_length(cls, cfg) -> int:
        return prompt_shape(cfg["source"])[0]

    def fit(self, ctx: WhiteBoxContext) -> Solution:
        cfg, backbone = ctx.method, ctx.backbone
        source = read_source(cfg["source"])
        spec = source_model_spec(source, cfg.get("source_model"))
        source_tokenizer, source_embeddings = load_embeddings(spec)
        if source_embeddings.shape[1] != source.prompt.shape[1]:
            raise ModelError(f"source prompt {source.path} is {source.prompt.shape[1]}-d but model '{spec.name}' at "
                             f"{spec.location} has {source_embeddings.shape[1]}-d embeddings: set method.source_model "
                             "to the model the prompt was trained on")
        prompt, info = recycle(
            source.prompt, source_tokenizer, source_embeddings, backbone.tokenizer, backbone.word_embeddings.weight,
            recycler=str(cfg["recycler"]), n_words=cfg.n_words, word_skip=cfg.word_skip,
            n_heldout=cfg.n_heldout, seed=cfg.seed, nn=dict(cfg["nn"]),
        )
        meta = {
            "source": str(source.path.resolve()), "source_model": spec.name, "source_location": spec.location,
            "source_family": spec.family, "source_method": source.meta.get("method"),
            "source_task": source.meta.get("task"), "source_seed": source.meta.get("seed"),
            "word_skip": cfg.word_skip, **info,
        }
        return Solution(prompt=prompt, meta=meta, budget_used=0)


METHOD = Recycling
