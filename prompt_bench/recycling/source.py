"""The source side of recycling: a saved prompt, the model it was trained on, and that model's word embeddings.

A prompt artifact (`prompt.safetensors` + `prompt.json`, see prompt_bench.artifacts) names its model
(`model`, `model_location`, `family`). The source model is found, in this order:
  1. `method.source_model` when set: a folder saved with save_pretrained, or a config name under conf/model/;
  2. `model_location` when it is a folder on this machine (a GGUF file name, if any, comes from the source run's
     config.yaml beside the prompt, else from conf/model/<model>.yaml);
  3. conf/model/<model>.yaml (an installed package or a hub id).
Only its tokenizer and input-embedding matrix are kept.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from prompt_bench.artifacts import load_tensors, tensor_shapes
from prompt_bench.conf_files import model_config
from prompt_bench.errors import ConfigError, ModelError
from prompt_bench.models.loading import ModelSpec, load_pretrained

_FIX = "set method.source_model=<a folder saved with save_pretrained, or a conf/model name>"


@dataclass(frozen=True)
class SourcePrompt:
    path: Path
    prompt: Tensor  # [L, d_source]
    meta: dict[str, Any]


def prompt_file(source: str | Path | None) -> Path:
    """The source's prompt.safetensors (a run folder is accepted for its prompt.safetensors)."""
    if source in (None, "", "???"):
        raise ConfigError("method.source is required: set method.source=<run folder>/prompt.safetensors "
                          "(a prompt saved by any prompt-bench run, e.g. method=prompt_tuning)")
    path = Path(str(source)).expanduser()
    if path.is_dir():
        path = path / "prompt.safetensors"
    if not path.is_file():
        raise ConfigError(f"method.source '{source}' does not exist: point it at the prompt.safetensors of a finished "
                          "run, e.g. outputs/sst2/prompt_tuning/minilm/<seed-hash>/prompt.safetensors")
    return path


def prompt_shape(source: str | Path | None) -> tuple[int, int]:
    """(L, d_source) of the source prompt, read from the file header (nothing loaded)."""
    path = prompt_file(source)
    shapes = tensor_shapes(path, fix="point method.source at the prompt.safetensors of a finished run")
    if "prompt" not in shapes:
        raise ConfigError(f"method.source '{source}' holds no shallow soft prompt (tensors: {', '.join(shapes)}): "
                          "recycling maps input prompts, e.g. from method=prompt_tuning or bbt")
    shape = shapes["prompt"]
    if len(shape) != 2:
        raise ConfigError(f"method.source '{source}': its prompt has shape {shape}, expected [tokens, width]")
    return int(shape[0]), int(shape[1])


def read_source(source: str | Path | None) -> SourcePrompt:
    path = prompt_file(source)
    prompt_shape(path)
    tensors, meta = load_tensors(path)
    if meta.get("prompt_mode") == "add":
        raise ConfigError(f"method.source '{source}' is a prompt added onto placeholder words (prompt_mode=add), an "
                          "offset rather than input embeddings, so it cannot be recycled: recycle a prompt trained "
                          "with method.prompt_mode=insert or by a gradient method")
    return SourcePrompt(path=path, prompt=tensors["prompt"].float(), meta=meta)


def _run_model_config(source: SourcePrompt) -> dict[str, Any]:
    """The `model` section of the source run's config.yaml, when the prompt sits in its run folder."""
    file = source.path.parent / "config.yaml"
    if not file.is_file():
        return {}
    try:
        return dict(OmegaConf.to_container(OmegaConf.load(file), resolve=False).get("model") or {})
    except Exception:  # a foreign or hand-edited config: fall back to the metadata alone
        return {}


def source_model_spec(source: SourcePrompt, override: str | None = None) -> ModelSpec:
    """Where the source prompt's model is on this machine (resolved, not loaded)."""
    meta = source.meta
    name, family, location = str(meta.get("model") or ""), meta.get("family"), meta.get("model_location")
    if override:
        folder = Path(str(override)).expanduser()
        if folder.is_dir():
            conf = model_config(name) or {}
            family = family or conf.get("family")
            if not family:
                raise ConfigError(f"source prompt {source.path} does not say its model family: "
                                  "add \"family\" to its prompt.json")
            gguf = conf.get("gguf_file")
            return ModelSpec.from_config({"name": name or folder.name, "family": family, "path": str(folder),
                                          "gguf_file": gguf if gguf and (folder / gguf).is_file() else None})
        conf = model_config(str(override))
        if conf is None:
            raise ModelError(f"method.source_model '{override}' is neither a folder nor a config under conf/model/: {_FIX}")
        return _spec_from_conf(conf, source)
    if location and Path(str(location)).is_dir() and family:
        run_model = _run_model_config(source)
        gguf = run_model.get("gguf_file") if run_model else (model_config(name) or {}).get("gguf_file")
        # Only where the weights are comes from the foreign run folder: loading options such as trust_remote_code
        # would let that folder decide to run code here, so only the user's own model config may set them.
        return _spec_from_conf({"name": name or "source", "family": family, "path": str(location), "gguf_file": gguf},
                               source)
    conf = model_config(name)
    if conf is not None:
        return _spec_from_conf(conf, source)
    raise ModelError(f"the model of source prompt {source.path} (model '{name or '?'}' at '{location or '?'}') is not on "
                     f"this machine and has no conf/model/{name or '<name>'}.yaml: {_FIX}")


def _spec_from_conf(conf: dict[str, Any], source: SourcePrompt) -> ModelSpec:
    try:
        return ModelSpec.from_config(conf)
    except (ConfigError, ModelError) as err:
        raise ModelError(f"the model of source prompt {source.path} cannot be found ({str(err).splitlines()[0]}): {_FIX}") from None


@functools.lru_cache(maxsize=2)
def load_embeddings(spec: ModelSpec) -> tuple[Any, Tensor]:
    """(tokenizer, input-embedding matrix [V, d] in float32 on the CPU) of a model; the model itself is dropped."""
    try:
        model, tokenizer = load_pretrained(spec, torch.device("cpu"), torch.float32)
    except ModelError as err:
        raise ModelError(f"{str(err).splitlines()[0].split(': without hub access')[0]}: {_FIX}") from None
    weights = model.get_input_embeddings().weight.detach().float().clone()
    del model
    return tokenizer, weights
