"""One line for each failure a user can cause or meet, naming what went wrong and the fix.

Hydra's and OmegaConf's messages are written for Hydra users (twenty lines for an unknown option, a hint to
append a misspelt key); the parsers' own exceptions name neither the file nor what to do. These functions turn
each into the line `prompt-bench: error: ...` prints.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import yaml

from prompt_bench import config_schema, conf_files

#: exit status for bad input (argparse's), and for an interrupted run (128 + SIGINT, as shells report Ctrl-C)
BAD_INPUT, INTERRUPTED = 2, 130
INTERRUPTED_LINE = "interrupted: run the same command again to resume from the last checkpoint"


def groups() -> list[str]:
    return sorted(p.name for p in conf_files.CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")


def default_choice(group: str) -> str | None:
    """The option conf/config.yaml picks for `group` when the command line does not."""
    defaults = yaml.safe_load((conf_files.CONF_DIR / "config.yaml").read_text(encoding="utf-8"))["defaults"]
    for entry in defaults:
        if isinstance(entry, dict) and group in entry:
            return entry[group]
    return None


def chosen(group: str, overrides: list[str]) -> str | None:
    for arg in overrides:
        key, eq, value = arg.lstrip("+~").partition("=")
        if eq and key == group:
            return value
    return default_choice(group)


def composed_choice(group: str, overrides: list[str], key: str | None = None) -> tuple[str | None, str]:
    """(option, job) for the message about `key`: the option the config chooses for `group` (a task may choose
    its own setting) in a job where that option lacks `key`; `job` names that job's swept values ("" if none)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    plain = [o for o in overrides if not o.startswith("-")]
    swept = [i for i, o in enumerate(plain) if "," in o.partition("=")[2] and "=" in o]
    jobs = [[o.partition("=")[0] + "=" + o.partition("=")[2].split(",")[0] if i in swept else o
             for i, o in enumerate(plain)]]
    for i in swept:
        name, _, values = plain[i].partition("=")
        for value in values.split(",")[1:]:
            jobs.append([*jobs[0][:i], f"{name}={value}", *jobs[0][i + 1:]])
    first = None
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf_files.CONF_DIR), version_base=None):
            for job in jobs:
                option = str(compose(config_name="config", overrides=job, return_hydra_config=True).hydra.runtime.choices[group])
                first = first or option
                if key is None or not _declares(group, option, key):
                    return option, " ".join(job[i] for i in swept)
    except Exception:  # noqa: BLE001 - the message only loses precision
        pass
    return first or chosen(group, overrides), ""


def _declares(group: str, option: str, key: str) -> bool:
    content = yaml.safe_load((conf_files.CONF_DIR / group / f"{option}.yaml").read_text(encoding="utf-8")) or {}
    node = content
    for part in key.split(".")[1:]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


#: options that come from an optional install, and the install
PLUGINS = {("hydra/sweeper", "optuna"): 'pip install "prompt-bench[optuna]"',
           ("hydra/launcher", "ray"): 'pip install "prompt-bench[ray]" (in an environment of its own)'}


def unknown_group_option(group: str, option: str) -> str:
    if (group, option) in PLUGINS:
        return f"{group}={option} needs a Hydra plugin that is not installed: {PLUGINS[group, option]}"
    options = conf_files.names(group)
    near = difflib.get_close_matches(option, options, n=1)
    hint = f" (did you mean {group}={near[0]}?)" if near else ""
    return f"unknown {group} '{option}'{hint}: use one of {', '.join(options)}"


def unknown_key(key: str, overrides: list[str]) -> str:
    """`method.budgett` -> not a setting of method=bbt, with the nearest key conf/ declares."""
    group = key.split(".")[0]
    known = sorted(config_schema.declared_kinds())
    near = difflib.get_close_matches(key, [k for k in known if k.startswith(group + ".")] or known, n=1, cutoff=0.75)
    if not near:  # `budget=5` for `method.budget=5`: the same last part under another group
        near = [k for k in known if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:1]
    hint = f"did you mean {near[0]}?" if near else "check its spelling"
    if group in groups():
        option, job = composed_choice(group, [o for o in overrides if o.lstrip("+").partition("=")[0] != key], key)
        elsewhere = [name for name in conf_files.names(group) if name != option and _declares(group, name, key)]
        if elsewhere:
            chosen_here = f"the one {job} chooses" if job else "the one chosen here"
            return (f"{key} is not a setting of {group}={option} ({chosen_here}): it belongs to "
                    f"{' and '.join(f'{group}={name}' for name in elsewhere)}; add {group}={elsewhere[0]} to use it")
        return (f"{key} is not a setting of {group}={option}: {hint} "
                f"(conf/{group}/{option}.yaml lists the settings, docs/methods/README.md explains them)")
    return f"{key} is not a setting: {hint} (prompt-bench --cfg job shows every setting)"


def hydra_line(err: BaseException, overrides: list[str]) -> str:
    """The one line for an error Hydra raised while reading the command line or composing the config."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    text = str(err)
    if isinstance(err, MissingConfigException):
        found = re.search(r"Could not (?:find|load) '(.+)/([^/']+)'", text)
        if found:
            return unknown_group_option(*found.groups())
    if isinstance(err, OverrideParseException):
        bad = _unparsable(overrides)
        return (f"cannot read {bad!r}: {text.splitlines()[0]}; write key=value, quote values with spaces or "
                "commas ('key=\"a b\"'), see https://hydra.cc/docs/advanced/override_grammar/basic")
    if isinstance(err, ConfigCompositionException):
        found = re.match(r"Could not override '([^']+)'", text)
        if found:
            return unknown_key(found.group(1), overrides)
        found = re.match(r"Could not append to config\. An item is already at '([^']+)'", text)
        if found:
            return f"{found.group(1)} is already a setting: set it with {found.group(1)}=... (no '+')"
        found = re.match(r"Multiple values for (\w+)", text)
        if found:
            group = found.group(1)
            return f"{group} is already in the config: choose it with {group}={chosen(group, overrides)} (no '+')"
        found = re.match(r"Ambiguous value for argument '([^']+)'", text)
        if found:
            arg = found.group(1)
            key, _, value = arg.partition("=")
            return (f"{arg} lists several values: add -m to sweep over them (prompt-bench -m {arg}), "
                    f"or quote it ({key}='\"{value}\"') for one text value")
        found = re.search(r"In '([^']+)': Could not find '(.+)/([^/']+)'", text)
        if found:
            return unknown_group_option(found.group(2), found.group(3))
    cause = err.__cause__ or err.__context__
    first = text.splitlines()[0] if text.strip() else type(err).__name__
    if cause is not None and str(cause).strip():
        first += f" ({str(cause).splitlines()[0]})"
    return first


def _unparsable(overrides: list[str]) -> str:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in overrides:
        try:
            parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - any parse failure marks the culprit
            return arg
    return " ".join(overrides)


def job_line(err: BaseException) -> str | None:
    """The one line for a fault met while a run runs (None: not one we can explain; it is a bug)."""
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException

    if isinstance(err, MissingMandatoryValue):
        key = getattr(err, "full_key", "") or "a value"
        return f"config value {key} is required: set it on the command line ({key}=...)"
    if isinstance(err, InterpolationResolutionError):
        key = getattr(err, "full_key", "") or "a value"
        return f"{key} cannot be resolved ({str(err).splitlines()[0]}): fix the ${{...}} it refers to"
    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", "")
        return f"{key + ': ' if key else ''}{str(err).splitlines()[0]}"
    if isinstance(err, PermissionError):
        where = err.filename or "a file"
        return (f"permission denied on {where}: make it writable, or choose another folder with run.root=<folder>")
    if isinstance(err, IsADirectoryError | NotADirectoryError | FileExistsError):
        return (f"{err.filename}: {err.strerror}: a run folder cannot be made there; "
                "choose another run.root (or hydra.sweep.dir)")
    if isinstance(err, OSError) and err.errno == 28:
        return f"no space left on the disk holding {err.filename or 'the run folder'}: free space or set run.root"
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8"
    if isinstance(err, json.JSONDecodeError):
        return f"a JSON file is truncated or not JSON ({err.msg} at line {err.lineno}): write it again"
    if isinstance(err, ValueError) and "No trials are completed yet" in str(err):  # Optuna, after a search
        return "every trial of the search failed: the [sweep] lines above say why"
    return None


def bug_line(err: BaseException, log_file: Path | None) -> str:
    where = f"; the traceback is in {log_file}" if log_file else ""
    return (f"unexpected {type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}{where} "
            "(set HYDRA_FULL_ERROR=1 to print it; please report it)")
