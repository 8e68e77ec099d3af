"""MetaPT (Huang, Qian & Yu 2022): prompt tuning from a prompt meta-learned on auxiliary tasks made by
clustering unlabelled pre-training text; `method.pretrain` says how (see prompt_bench/pretraining/)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from prompt_bench.errors import ConfigError
from prompt_bench.methods.base import Solution, WhiteBoxContext
from prompt_bench.methods.prompt_tuning import PromptTuning
from prompt_bench.pretraining import clustering, corpus, meta
from prompt_bench.pretraining.pipeline import pretrained_prompt


class MetaPT(PromptTuning):
    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        pre = cfg["pretrain"]
        if pre["algorithm"] not in meta.ALGORITHMS:
            raise ConfigError(f"method.pretrain.algorithm={pre['algorithm']} is not one of {', '.join(meta.ALGORITHMS)}")
        if pre["clustering"] not in clustering.METHODS:
            raise ConfigError(f"method.pretrain.clustering={pre['clustering']} is not one of {', '.join(clustering.METHODS)}")
        if pre["corpus"]["kind"] not in corpus.KINDS:
            raise ConfigError(f"method.pretrain.corpus.kind={pre['corpus']['kind']} is not one of {', '.join(corpus.KINDS)}")
        if pre["clustering"] == "none" and pre["algorithm"] != "multitask":
            raise ConfigError("meta-learning needs auxiliary tasks: set method.pretrain.clustering=kmeans or lda "
                              "(clustering=none goes with algorithm=multitask, which is PPT)")

    def fit(self, ctx: WhiteBoxContext) -> Solution:
        if ctx.files.cache_dir is None:
            raise ConfigError("MetaPT needs a cache folder for its pre-trained prompt (run it through prompt-bench)")
        path, facts = pretrained_prompt(ctx.backbone, ctx.method["pretrain"], ctx.method.n_prompt_tokens,
                                        ctx.files.cache_dir, ctx.files.mirror_root, ctx.evaluation.batch_size)
        if ctx.files.run_dir is not None and facts.get("clusters_file") and Path(facts["clusters_file"]).is_file():
            shutil.copyfile(facts["clusters_file"], ctx.files.run_dir / "clusters.json")  # what the auxiliary tasks were
        downstream = dataclasses.replace(ctx, method={**ctx.method, "init": str(path)})
        solution = super().fit(downstream)
        solution.meta = {**solution.meta, "pretrained_prompt": str(path),
                         "pretraining": {k: v for k, v in facts.items() if k != "query_loss"},
                         "pretrain_final_query_loss": (facts.get("query_loss") or [None])[-1]}
        return solution


METHOD = MetaPT
