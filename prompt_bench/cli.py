"""`prompt-bench`: the Hydra entry point. It only turns a config into a run and errors into one line."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from prompt_bench.errors import PromptBenchError

# A console script has no useful working directory to resolve a relative config_path against.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

#: config keys that do not change what a run computes, so they stay out of its folder's hash
UNHASHED = ("hydra", "run", "logger")


def config_hash(*, _root_: DictConfig) -> str:
    keep = [key for key in _root_ if key not in UNHASHED]
    content = OmegaConf.to_container(OmegaConf.masked_copy(_root_, keep), resolve=True)
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:8]


if not OmegaConf.has_resolver("pb_hash"):
    OmegaConf.register_new_resolver("pb_hash", config_hash)


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from prompt_bench import experiment

    try:
        return experiment.run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (PromptBenchError, MissingMandatoryValue) as err:
        message = str(err).splitlines()[0]
        if isinstance(err, MissingMandatoryValue):
            key = getattr(err, "full_key", "") or "a value"
            message = f"config value {key} is required: set it on the command line ({key}=...)"
        print(f"prompt-bench: error: {message}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return {"error": message}  # one bad job must not end the whole sweep
        sys.exit(2)


if __name__ == "__main__":
    main()
