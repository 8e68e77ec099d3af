"""The unlabelled text MetaPT pre-trains on: a local .txt / .tsv / .jsonl file, or the texts of a task's train
split with its labels dropped. Never the downstream task's gold labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from prompt_bench.errors import ConfigError, DataError

KINDS = ("file", "task_texts")


def load_corpus(cfg: Mapping[str, Any], mirror_root: Path | None, seed: int) -> list[str]:
    """Distinct non-empty texts, at most `cfg.max_texts` of them (a seeded sample when there are more)."""
    kind = str(cfg.get("kind"))
    if kind == "file":
        texts = _read_file(Path(str(cfg["path"])).expanduser(), cfg.get("field"))
    elif kind == "task_texts":
        texts = _task_texts(str(cfg["task"]), mirror_root)
    else:
        raise ConfigError(f"method.pretrain.corpus.kind={kind} is not one of {', '.join(KINDS)}")
    texts = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
    limit = int(cfg.get("max_texts") or 0)
    if limit and len(texts) > limit:
        keep = np.random.RandomState(seed).choice(len(texts), limit, replace=False)
        texts = [texts[i] for i in sorted(keep)]
    if len(texts) < 2:
        raise DataError(f"the pre-training corpus has {len(texts)} usable texts: point method.pretrain.corpus at more text")
    return texts


def _read_file(path: Path, field: str | None) -> list[str]:
    if not path.is_file():
        raise DataError(f"pre-training corpus file {path} does not exist: set method.pretrain.corpus.path to a .txt, .tsv or .jsonl file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return path.read_text(encoding="utf-8").splitlines()
    if suffix == ".jsonl":
        key = field or "text"
        texts = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {number} is not JSON ({err.msg}): fix the line or use a .txt file") from None
            if not isinstance(record, dict) or key not in record:
                raise DataError(f"{path} line {number} has no '{key}' key: set method.pretrain.corpus.field to the text key")
            texts.append(str(record[key]))
        return texts
    if suffix == ".tsv":
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        if not rows:
            return []
        header, body = rows[0], rows[1:]
        key = field or "sentence"
        if key not in header:
            raise DataError(f"{path} has no column '{key}' (columns: {header}): set method.pretrain.corpus.field")
        column = header.index(key)
        return [row[column] for row in body if len(row) > column]
    raise DataError(f"pre-training corpus {path} must end in .txt, .tsv or .jsonl")


def _task_texts(task_name: str, mirror_root: Path | None) -> list[str]:
    from prompt_bench.conf_files import task_spec
    from prompt_bench.tasks import loading

    spec = task_spec(task_name, "method.pretrain.corpus.task")
    split = loading.load_split(spec, "train", mirror_root)
    # the labels are dropped here: only the texts go on
    return [" ".join(str(v) for v in example.fields.values()) for example in split.examples]
