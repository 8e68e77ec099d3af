"""Turn a TaskSpec into labelled examples, from a local mirror of the official files or from the HF hub.

The mirror keeps each data set in its released layout (see shared/data/SOURCES.md), so there is one
reader per layout and everything task-specific (columns, label values, which file is which split)
comes from the task YAML. Where the mirror lacks a split, `mirror.substitute` in the YAML says what
stands in for it, and the substitution is reported in `LoadedSplit.note` so a run summary can say so.

Substitute kinds:
  fixed_train             the train file is not the official train split (e.g. a released few-shot subset)
  train_from_other_split  the train pool is another official split (e.g. SNLI dev)
  pool_from_test          one labelled file, split once (seed 0, pool_size) into a train pool and the test set
  dev_from_test           the test file is split once (seed 0, pool_size) into a fixed dev pool and the test
                          set, for settings that draw dev from outside a fixed train set (`load_dev_pool`)
"""

from __future__ import annotations

import csv
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from prompt_bench.errors import ConfigError, DataError
from prompt_bench.tasks.spec import Example, TaskSpec

SPLITS = ("train", "test")
#: the official layouts, then the generic ones for your own data (named fields and a label column or key)
FORMATS = ("glue_tsv", "superglue_jsonl", "multirc_jsonl", "ag_news_csv", "snli_lines", "jsonl", "csv", "tsv")
SUBSTITUTES = ("fixed_train", "pool_from_test", "train_from_other_split", "dev_from_test")
ENV_VAR = "PROMPT_BENCH_DATA"

# The char-CNN AG News csv has no header; these are the column names a task YAML refers to.
_AG_NEWS_COLUMNS = ("class", "title", "description")
# One pool permutation for every run: the train/test (or dev/test) partition must not move with the run
# seed, otherwise test examples of one run would be training or dev examples of another.
_POOL_SEED = 0


@dataclass(frozen=True)
class LoadedSplit:
    examples: list[Example]
    source: str  # file path(s) or hub id, for the run summary
    note: str | None = None  # set when a substitute stands in for the official split


# Where this checkout expects the shared mirror when nothing else is said (the project's sibling folder).
DEFAULT_MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data"


def mirror_root(configured: str | None) -> Path | None:
    """The local data mirror to read from, or None to use the HF hub.

    "auto" means: $PROMPT_BENCH_DATA if set, else ../shared/data beside the checkout if it exists,
    else the hub. An explicit folder that does not exist is an error, never a silent hub fallback.
    """
    value = None if configured in (None, "") else str(configured)
    if value == "auto":
        value = os.environ.get(ENV_VAR) or (str(DEFAULT_MIRROR) if DEFAULT_MIRROR.is_dir() else None)
    if value is None:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data mirror '{root}' does not exist: set data.mirror=<folder holding glue/ superglue/ extra/> "
            "or data.mirror=null to use the HF hub"
        )
    return root


def load_split(spec: TaskSpec, split: str, root: Path | None) -> LoadedSplit:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if Path(spec.mirror.dir).expanduser().is_absolute():  # your own files, wherever the mirror is
        return _load_mirror(spec, split, Path("/"))
    if root is None:
        return _load_hub(spec, split)
    return _load_mirror(spec, split, Path(root))


def load_dev_pool(spec: TaskSpec, root: Path | None) -> LoadedSplit | None:
    """The fixed dev pool a `dev_from_test` substitute carves out of the test file, or None.

    None means the task has no such pool (or is read from the hub): a setting then draws dev from train.
    The pool is the same for every run seed and setting, and the test split never contains it.
    """
    if root is None or dict(spec.mirror.substitute).get("kind") != "dev_from_test":
        return None
    return _load_mirror(spec, "dev", Path(root))


# ---------------------------------------------------------------------------------------------
# mirror


def _load_mirror(spec: TaskSpec, split: str, root: Path) -> LoadedSplit:
    m = spec.mirror
    if m.format not in FORMATS:
        raise ConfigError(f"task '{spec.name}': unknown mirror.format '{m.format}'; use one of {', '.join(FORMATS)}")
    file_key = "test" if split == "dev" else split  # a dev pool (dev_from_test) lives in the test file
    if file_key not in m.files:
        raise ConfigError(f"task '{spec.name}': mirror.files has no '{file_key}' entry; give files: {{train: ..., test: ...}}")
    path = root / m.dir / m.files[file_key]
    examples, source = _read(spec, path)
    if not examples:
        raise DataError(f"{source}: no examples in the file; check mirror.files.{file_key} in task '{spec.name}'")

    sub = dict(m.substitute)
    kind = sub.get("kind")
    if split == "dev" and kind != "dev_from_test":
        raise ConfigError(f"task '{spec.name}': only mirror.substitute.kind dev_from_test gives a dev pool (kind is {kind})")
    if kind is None:
        return LoadedSplit(list(examples), source)
    if kind not in SUBSTITUTES:
        raise ConfigError(
            f"task '{spec.name}': unknown mirror.substitute.kind '{kind}'; use one of {', '.join(SUBSTITUTES)}"
        )
    note = str(sub.get("note") or f"{split} split substituted ({kind})")
    if kind == "pool_from_test":
        if m.files.get("train") != m.files.get("test"):
            raise ConfigError(
                f"task '{spec.name}': substitute pool_from_test splits one file into train pool and test, "
                f"so mirror.files.train and mirror.files.test must name the same file"
            )
        return LoadedSplit(_pool_partition(spec, examples, sub, split == "train", source), source, note)
    if kind == "dev_from_test":
        if m.files.get("train") == m.files.get("test"):
            raise ConfigError(
                f"task '{spec.name}': substitute dev_from_test carves a dev pool out of the test file, so "
                f"mirror.files.train must name another file (otherwise train would overlap dev and test)"
            )
        if split == "train":
            return LoadedSplit(list(examples), source, note)
        return LoadedSplit(_pool_partition(spec, examples, sub, split == "dev", source), source, note)
    # fixed_train and train_from_other_split only change where train comes from; test is official.
    return LoadedSplit(list(examples), source, note if split == "train" else None)


def _pool_partition(
    spec: TaskSpec, examples: tuple[Example, ...], sub: Mapping[str, Any], pool: bool, source: str
) -> list[Example]:
    """The pool part (pool=True) or the rest of a file split once by the fixed seed-0 permutation."""
    kind = sub.get("kind")
    try:
        pool_size = int(sub["pool_size"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"task '{spec.name}': substitute {kind} needs an integer pool_size") from None
    if not 0 < pool_size < len(examples):
        raise ConfigError(
            f"task '{spec.name}': pool_size={pool_size} must be between 1 and {len(examples) - 1} "
            f"({source} has {len(examples)} examples)"
        )
    order = np.random.RandomState(_POOL_SEED).permutation(len(examples))
    chosen = order[:pool_size] if pool else order[pool_size:]
    # File order within each part keeps the test set easy to diff against the source file.
    return [examples[i] for i in sorted(chosen.tolist())]


def _read(spec: TaskSpec, path: Path) -> tuple[tuple[Example, ...], str]:
    m = spec.mirror
    if m.format == "snli_lines":
        paths = [path.parent / f"{prefix}.{path.name}" for prefix in (*m.fields.values(), m.label)]
    else:
        paths = [path]
    for p in paths:
        if not p.is_file():
            raise DataError(
                f"task '{spec.name}': data file '{p}' not found: point data.mirror (or ${ENV_VAR}) at the folder "
                "holding glue/ superglue/ extra/ laid out as in shared/data/SOURCES.md, or unset it to use the HF hub"
            )
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    examples = _parse_cached(
        m.format,
        stamp,
        tuple(m.fields.items()),
        m.label,
        m.header,
        spec.labels,
    )
    source = str(path) if len(paths) == 1 else ", ".join(str(p) for p in paths)
    return examples, source


# Keyed by the file's path plus its mtime/size (so a rewritten file is re-read) and by how it is
# read: several runs in one process (sweeps, tests) load the same large file.
@functools.lru_cache(maxsize=64)
def _parse_cached(
    fmt: str,
    stamp: tuple[tuple[str, int, int], ...],
    fields: tuple[tuple[str, str], ...],
    label: str,
    header: bool,
    labels: tuple[str, ...],
) -> tuple[Example, ...]:
    path = Path(stamp[0][0])
    index = {value: i for i, value in enumerate(labels)}
    reader = _READERS[fmt]
    try:
        return tuple(reader(path, dict(fields), label, header, index, [Path(s[0]) for s in stamp]))
    except UnicodeDecodeError as err:
        files = ", ".join(s[0] for s in stamp)
        raise DataError(f"{files}: not UTF-8 text (byte {err.start}: {err.object[err.start:err.start + 1]!r}): "
                        "save the file as UTF-8") from None
    except PermissionError as err:
        raise DataError(f"{err.filename}: cannot be read (permission denied): make it readable or point "
                        "data.mirror at a copy you can read") from None


def _class_index(raw: Any, index: Mapping[str, int], where: str) -> int:
    # str(True) == "True" and str(1) == "1", which is how task YAMLs spell json booleans and ints.
    key = raw if isinstance(raw, str) else str(raw)
    try:
        return index[key]
    except KeyError:
        raise DataError(f"{where}: unknown label {key!r}; expected one of {list(index)}") from None


def _text(value: Any, where: str, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)) or value is None:
        raise DataError(f"{where}: '{name}' is {type(value).__name__}, expected text")
    return str(value)


def _read_glue_tsv(path: Path, fields: dict, label: str, header: bool, index: dict, _paths) -> Iterator[Example]:
    # utf-8-sig: MRPC's header starts with a BOM; QUOTE_NONE: GLUE TSVs contain bare quote characters.
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns: list[str] | None = None
        try:
            for row in rows:
                line = rows.line_num
                where = f"{path}:{line}"
                if not row:
                    continue
                if columns is None:
                    if header:
                        columns = row
                        _check_columns(path, columns, fields, label)
                        continue
                    columns = [str(i) for i in range(len(row))]
                    _check_columns(path, columns, fields, label)
                if len(row) != len(columns):
                    raise DataError(f"{where}: expected {len(columns)} tab-separated columns, found {len(row)}")
                record = dict(zip(columns, row))
                yield Example(
                    fields={name: record[col] for name, col in fields.items()},
                    label=_class_index(record[label], index, where),
                )
        except csv.Error as err:
            raise DataError(f"{path}:{rows.line_num}: {err}") from None


def _check_columns(path: Path, columns: list[str], fields: dict, label: str) -> None:
    missing = [c for c in (*fields.values(), label) if c not in columns]
    if missing:
        raise DataError(f"{path}:1: no column {missing} in {columns}; fix mirror.fields / mirror.label in the task YAML")


def json_lines(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, record) for each non-blank line of a JSON-lines file; a bad line raises DataError naming it."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            where = f"{path}:{line_no}"
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: bad json ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a json object, found {type(record).__name__}")
            yield where, record


def _dotted(record: dict, dotted: str, where: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"{where}: missing key '{dotted}'")
        value = value[part]
    return value


def _read_superglue_jsonl(path: Path, fields: dict, label: str, _header, index: dict, _paths) -> Iterator[Example]:
    for where, record in json_lines(path):
        yield Example(
            fields={name: _text(_dotted(record, key, where), where, key) for name, key in fields.items()},
            label=_class_index(_dotted(record, label, where), index, where),
        )


def _read_multirc_jsonl(path: Path, fields: dict, label: str, _header, index: dict, _paths) -> Iterator[Example]:
    # Our fields are fixed by the format: one example per (passage, question, answer) as on the hub.
    wanted = {"paragraph", "question", "answer"}
    if set(fields) != wanted:
        raise ConfigError(f"multirc_jsonl gives the fields {sorted(wanted)}; the task YAML asks for {sorted(fields)}")
    for where, record in json_lines(path):
        passage = _dotted(record, "passage", where)
        paragraph = _text(_dotted(passage, "text", where + " passage"), where, "passage.text")
        questions = _dotted(passage, "questions", where + " passage")
        p_idx = _dotted(record, "idx", where)
        for q_no, q in enumerate(_list(questions, where, "passage.questions")):
            q_where = f"{where} question {q_no}"
            question = _text(_dotted(q, "question", q_where), q_where, "question")
            group = f"{p_idx}-{_dotted(q, 'idx', q_where)}"
            for a_no, a in enumerate(_list(_dotted(q, "answers", q_where), q_where, "answers")):
                a_where = f"{q_where} answer {a_no}"
                answer = _text(_dotted(a, "text", a_where), a_where, "text")
                yield Example(
                    fields={"paragraph": paragraph, "question": question, "answer": answer},
                    label=_class_index(_dotted(a, label, a_where), index, a_where),
                    group=group,
                )


def _list(value: Any, where: str, name: str) -> list:
    if not isinstance(value, list):
        raise DataError(f"{where}: '{name}' is {type(value).__name__}, expected a list")
    return value


def _read_ag_news_csv(path: Path, fields: dict, label: str, _header, index: dict, _paths) -> Iterator[Example]:
    _check_columns(path, list(_AG_NEWS_COLUMNS), fields, label)
    with open(path, encoding="utf-8", newline="") as f:
        # The same csv dialect the HF ag_news builder uses, so mirror and hub texts agree.
        rows = csv.reader(f, quotechar='"', delimiter=",", quoting=csv.QUOTE_ALL, skipinitialspace=True)
        try:
            for row in rows:
                where = f"{path}:{rows.line_num}"
                if not row:
                    continue
                if len(row) != len(_AG_NEWS_COLUMNS):
                    raise DataError(f"{where}: expected 3 comma-separated columns (class, title, description), found {len(row)}")
                record = dict(zip(_AG_NEWS_COLUMNS, row))
                yield Example(
                    fields={name: record[col] for name, col in fields.items()},
                    label=_class_index(record[label], index, where),
                )
        except csv.Error as err:
            raise DataError(f"{path}:{rows.line_num}: {err}") from None


def _read_snli_lines(path: Path, fields: dict, label: str, _header, index: dict, paths: list[Path]) -> Iterator[Example]:
    columns: list[list[str]] = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            # InferSent files pad every sentence with a trailing space that is not part of the text.
            columns.append([line.rstrip() for line in f.read().splitlines()])
    lengths = {str(p): len(c) for p, c in zip(paths, columns)}
    if len(set(lengths.values())) != 1:
        raise DataError(f"{path}: parallel files differ in length {lengths}; they must have one item per line each")
    *texts, labels = columns
    for i, raw in enumerate(labels):
        where = f"{paths[-1]}:{i + 1}"
        yield Example(
            fields={name: texts[j][i] for j, name in enumerate(fields)},
            label=_class_index(raw, index, where),
        )


def _read_jsonl(path: Path, fields: dict, label: str, _header, index: dict, _paths) -> Iterator[Example]:
    for where, record in json_lines(path):
        yield Example(fields={name: _text(_dotted(record, key, where), where, key) for name, key in fields.items()},
                      label=_class_index(_dotted(record, label, where), index, where))


def _read_table(delimiter: str):
    def read(path: Path, fields: dict, label: str, _header, index: dict, _paths) -> Iterator[Example]:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = csv.DictReader(f, delimiter=delimiter)
            _check_columns(path, list(rows.fieldnames or []), fields, label)
            try:
                for row in rows:
                    where = f"{path}:{rows.line_num}"
                    if None in row or any(v is None for v in row.values()):
                        raise DataError(f"{where}: expected {len(rows.fieldnames)} columns like the header")
                    yield Example(fields={name: row[col] for name, col in fields.items()},
                                  label=_class_index(row[label], index, where))
            except csv.Error as err:
                raise DataError(f"{path}:{rows.line_num}: {err}") from None

    return read


_READERS = {
    "glue_tsv": _read_glue_tsv,
    "superglue_jsonl": _read_superglue_jsonl,
    "multirc_jsonl": _read_multirc_jsonl,
    "ag_news_csv": _read_ag_news_csv,
    "snli_lines": _read_snli_lines,
    "jsonl": _read_jsonl,
    "csv": _read_table(","),
    "tsv": _read_table("\t"),
}


# ---------------------------------------------------------------------------------------------
# hub


def _load_hub(spec: TaskSpec, split: str) -> LoadedSplit:
    h = spec.hub
    if h is None:
        raise DataError(f"task '{spec.name}' has no hub section and its files were not found under the data mirror: "
                        "give mirror.dir as an absolute folder, or set data.mirror")
    if split not in h.splits:
        raise ConfigError(f"task '{spec.name}': hub.splits has no '{split}' entry")
    hub_id = f"{h.path}/{h.name}" if h.name else h.path
    source = f"hf:{hub_id}[{h.splits[split]}]" + (f"@{h.revision}" if h.revision else "")
    fix = (
        f"set data.mirror=<folder holding glue/ superglue/ extra/> (or ${ENV_VAR}) to read task '{spec.name}' "
        "from a local copy instead"
    )
    try:
        import datasets  # slow import, and only needed without a mirror

        rows = datasets.load_dataset(h.path, h.name, split=h.splits[split], revision=h.revision)
    except Exception as err:  # network, auth, missing config: all end the same way for the user
        raise DataError(f"could not load task '{spec.name}' from the HF hub ({source}: {type(err).__name__}: {err}): {fix}") from None

    examples = []
    for i, row in enumerate(rows):
        where = f"{source} row {i}"
        try:
            label = int(row["label"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: no integer 'label'") from None
        if label < 0:
            # The hub marks unlabelled rows with -1 (SNLI pairs without gold label, GLUE test splits).
            continue
        if label >= spec.num_classes:
            raise DataError(f"{where}: label {label} but task '{spec.name}' has {spec.num_classes} classes {list(spec.labels)}")
        fields = {}
        for name, column in h.fields.items():
            # A null column means the hub folded this field into another one (ag_news: title+description = text).
            if column is None:
                fields[name] = ""
            elif column not in row:
                raise DataError(f"{where}: no column '{column}' (hub.fields.{name}); columns are {sorted(row)}")
            else:
                fields[name] = _text(row[column], where, column)
        group = None
        if spec.mirror.format == "multirc_jsonl":
            idx = row.get("idx") or {}
            group = f"{idx.get('paragraph')}-{idx.get('question')}"
        examples.append(Example(fields=fields, label=label, group=group))
    if not examples:
        raise DataError(f"{source} has no labelled examples: pick a labelled hub split in hub.splits.{split}")
    return LoadedSplit(examples, source)
