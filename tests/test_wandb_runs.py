"""A run folder is one W&B run: a killed-then-resumed job continues it, its curves share an explicit x-axis,
its summary holds what a dashboard compares, and its prompt is an artifact with a stable name. Read back from
the offline run files W&B writes (the same files `wandb sync` uploads)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from prompt_bench import experiment
from prompt_bench.tracking import WANDB_ID_FILE
from test_experiment import SMALL_BBT, interrupt_at, make


def wandb_records(run_file: Path) -> list:
    """The protobuf records of an offline `.wandb` file: a 7-byte header, then LevelDB-log blocks of 32 KiB whose
    records are whole (type 1) or split into first / middle / last parts (2, 3, 4)."""
    from wandb.proto import wandb_internal_pb2

    data, records, part, pos, block = run_file.read_bytes(), [], b"", 7, 32768
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        part = chunk if kind in (1, 2) else part + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            records.append(record)
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B's service writes a key as its path parts


def _runs(folder: Path) -> list[list]:
    return [wandb_records(f) for f in sorted(folder.rglob("run-*.wandb"), key=lambda f: f.parent.name)]


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_a_killed_then_resumed_run_is_one_w_and_b_run_with_continuous_api_call_curves(mirror, tmp_path, offline,
                                                                                    monkeypatch):
    cfg = make(mirror, *SMALL_BBT, "logger=wandb", "logger.mode=offline")
    folder = tmp_path / "run"
    interrupt_at(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg, folder)
    monkeypatch.undo()
    results = experiment.run(cfg, folder)
    import wandb

    wandb.teardown()  # the W&B service writes the last records when it shuts down, as at the end of a CLI run

    run_id = (folder / WANDB_ID_FILE).read_text().strip()
    segments = _runs(folder)
    assert len(segments) == 2, "one offline segment per process, both of the same W&B run"
    assert {r.run.run_id for seg in segments for r in seg if r.WhichOneof("record_type") == "run"} == {run_id}

    def history(seg):
        rows = []
        for r in seg:
            if r.WhichOneof("record_type") == "history":
                rows.append({_key(item): json.loads(item.value_json) for item in r.history.item})
        return rows

    first, second = history(segments[0]), history(segments[1])
    calls_first = [row["api_calls"] for row in first if "train/loss" in row]
    calls_second = [row["api_calls"] for row in second if "train/loss" in row]
    assert calls_first and calls_second and max(calls_first) < 40 <= min(calls_second)
    assert sorted(set(calls_first) | set(calls_second)) == list(range(10, 61, 10))  # popsize 10, budget 60

    metrics = {m.metric.name or m.metric.glob_name: m.metric.step_metric for seg in segments for m in seg
               if m.WhichOneof("record_type") == "metric"}
    assert metrics.get("*") == "api_calls"

    summary = {}
    for r in segments[1]:
        if r.WhichOneof("record_type") == "summary":
            summary.update({_key(item): json.loads(item.value_json) for item in r.summary.update})
    assert summary["test/accuracy"] == pytest.approx(results["test"]["accuracy"])
    assert summary["dev/accuracy"] == pytest.approx(results["dev"]["accuracy"])
    for key in ("budget_used", "wall_time_s", "peak_memory_mb", "n_train", "run_folder", "config_hash"):
        assert key in summary, key

    artifacts = [r.artifact for r in segments[1] if r.WhichOneof("record_type") == "artifact"]
    assert [a.name for a in artifacts] == ["sst2-bbt-minilm-s42"]
    assert json.loads(artifacts[0].metadata)["method"] == "bbt"


def test_a_prompt_a_run_starts_from_is_its_input_artifact(mirror, tmp_path, offline, tiny_models):
    tiny = ["model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm",
            "method=prompt_tuning", "method.n_prompt_tokens=2", "method.max_steps=2", "method.eval_every=1",
            "method.batch_size=4"]
    experiment.run(make(mirror, *tiny, "logger=none"), tmp_path / "first")
    experiment.run(make(mirror, *tiny, "logger=wandb", "logger.mode=offline",
                        f"method.init={tmp_path / 'first' / 'prompt.safetensors'}"), tmp_path / "second")
    import wandb

    wandb.teardown()
    (records,) = _runs(tmp_path / "second")
    (artifact,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    (source,) = json.loads(artifact.metadata)["inputs"]  # offline W&B cannot use artifacts: the lineage is here
    assert source["file"] == str(tmp_path / "first" / "prompt.safetensors")
    assert source["sha256"] == hashlib.sha256((tmp_path / "first" / "prompt.safetensors").read_bytes()).hexdigest()
