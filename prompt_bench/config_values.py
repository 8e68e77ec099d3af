"""Reading config values that YAML and the command line may spell loosely, by one rule everywhere."""

from __future__ import annotations

from typing import Any

from prompt_bench.errors import ConfigError

_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def flag(key: str, value: Any) -> bool:
    """A yes/no value: booleans, or true/false, yes/no, on/off, 1/0 in any case. Anything else is refused
    (`bool("off")` is True, which once turned bf16 on for `compute.bf16=off`)."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _WORDS:
        return _WORDS[word]
    raise ConfigError(f"{key}={value} is not a yes/no value: use {key}=true or {key}=false")


def bf16_mode(key: str, value: Any) -> bool | str:
    """compute.bf16: a yes/no value, or `auto` (bf16 where the hardware runs it natively; see
    models.loading.pick_dtype). Returns True, False or "auto"."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return flag(key, value)
    except ConfigError:
        raise ConfigError(f"{key}={value} is not a yes/no value: use {key}=true or {key}=false, or {key}=auto "
                          "(bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere)") from None


def whole_number(key: str, value: Any, minimum: int | None = None, example: str = "") -> int:
    """An integer given as one (1.5 or "abc" are refused, never rounded)."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())):
        raise ConfigError(f"{key}={value} is not a whole number: use e.g. {key}={example or max(minimum or 0, 1) * 100}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ConfigError(f"{key}={value} must be at least {minimum}")
    return number
