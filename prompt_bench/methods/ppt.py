"""PPT (Gu et al. 2022) as MetaPT's baseline: the same pipeline with no clustering and no meta-learning,
i.e. multi-task prompt pre-training on the whole pseudo-labelled corpus, then prompt tuning."""

from prompt_bench.errors import ConfigError
from prompt_bench.methods.metapt import MetaPT


class PPT(MetaPT):
    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        if cfg["pretrain"]["clustering"] != "none" or cfg["pretrain"]["algorithm"] != "multitask":
            raise ConfigError("method=ppt pre-trains on the union (clustering=none, algorithm=multitask): "
                              "use method=metapt for clustered, meta-learned pre-training")


METHOD = PPT
