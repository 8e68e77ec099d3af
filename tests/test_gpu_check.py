"""scripts/gpu_check.sh, the prepared GPU check, in its CPU mode (--device cpu --small), so it cannot rot on CPU CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADER = "| check | model | fp32 | bf16 | note |"
CHECKS = ("BBT generation, population-batched", "BBT generation, one candidate at a time",
          "peak memory, one batched generation", "8,000 BBT API calls, extrapolated",
          "BBTv2 generation without / with prefix cache")


def gpu_check():
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_check

    return gpu_check


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # as on CI: no GPU to find
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--small", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_the_cpu_mode_prints_one_table_with_every_check_for_both_shapes(cpu_run):
    stdout, results = cpu_run
    table = [line for line in stdout.splitlines() if line.startswith("|")]
    assert stdout.count(HEADER) == 1 and table[0] == HEADER
    assert all(line.count("|") == 6 for line in table), "every row has the table's five cells"
    for model in ("roberta-shaped (tiny)", "t5-shaped (tiny)"):
        rows = [line for line in table if f"| {model} |" in line]
        assert [check for check in CHECKS if any(line.startswith(f"| {check}") for line in rows)] == list(CHECKS), model
    assert any(line.startswith("| prompt tuning step: ours / peft") for line in table)
    assert any(line.startswith("| P-tuning v2 step: ours / peft") for line in table)
    assert table[-1].startswith("| GPU pool claims a device |") and "no GPU found" in table[-1]
    assert results["table"] == "\n".join(table)


def test_every_timing_is_measured_in_the_one_run(cpu_run):
    _, results = cpu_run
    assert results["device"] == "cpu" and set(results["models"]) == {"roberta-shaped (tiny)", "t5-shaped (tiny)"}
    for model, row in results["models"].items():
        for precision in ("fp32", "bf16") if "bf16" in row else ("fp32",):
            part = row[precision]
            assert part["batched_s"] > 0 and part["one_at_a_time_s"] > 0, (model, precision)
            assert part["speedup"] == pytest.approx(part["one_at_a_time_s"] / part["batched_s"])
    steps = results["models"]["roberta-shaped (tiny)"]["gradient"]
    assert set(steps) == {"prompt_tuning", "p_tuning_v2"}
    assert all(s["ours_ms"] > 0 and s["peft_ms"] > 0 for s in steps.values())
    assert results["total_s"] < 60, "the CPU mode must stay well under a minute"


def test_the_bbtv2_row_says_not_available_exactly_until_bbtv2_has_a_prefix_cache_option(cpu_run):
    _, results = cpu_run
    has_option = "prefix_cache" in (ROOT / "prompt_bench" / "methods" / "bbtv2.py").read_text()
    for row in results["models"].values():
        assert row["fp32"]["bbtv2"]["available"] is has_option
    bbtv2_rows = [line for line in results["table"].splitlines() if line.startswith("| BBTv2 generation")]
    assert len(bbtv2_rows) == 2
    assert all(("not available" in line) is not has_option for line in bbtv2_rows)


@pytest.mark.parametrize("shape", ["roberta-shaped (tiny)", "t5-shaped (tiny)"])
def test_the_bbtv2_row_measures_both_ways_once_the_option_exists(monkeypatch, shape):
    check = gpu_check()
    import torch
    from transformers import AutoTokenizer

    import bench_dfo
    from prompt_bench.batching import encode_split

    monkeypatch.setattr(check, "prefix_cache_available", lambda: True)
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(bench_dfo.ModelSpec.from_config(bench_dfo.MINILM).location)
    task = bench_dfo.sst2()
    backbone = check.build_backbone("t", check.SMALL[shape], tokenizer, torch.device("cpu"))
    examples = check.synthetic_examples(tokenizer, 8, seed=0)
    train, dev = (encode_split(part, task, backbone, 4) for part in (examples[:4], examples[4:]))
    row = check.bbtv2_prefix_cache(backbone, task, train, dev, popsize=4, prompt_len=4)
    assert row["available"] and row["generations"] == 2  # one generation per layer of the 2-layer model
    assert row["uncached_s"] > 0 and row["cached_s"] > 0
    assert row["same_prompt"], "the cached search must end on the uncached search's prompt (on CPU, bit for bit)"
