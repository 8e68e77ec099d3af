"""The `prompt-bench` console script, run as a researcher runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# the script installed beside this interpreter first: another prompt-bench on PATH may be another install
_BESIDE = Path(sys.executable).parent / "prompt-bench"
EXE = str(_BESIDE) if _BESIDE.is_file() else shutil.which("prompt-bench") or str(_BESIDE)


def cli(*args, cwd=None, env=None):
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd or ROOT, timeout=600, env=env)


def test_the_cli_runs_a_method_and_prints_a_one_screen_summary(mirror, tmp_path):
    done = cli("method=manual", "task=sst2", "setting.k=4", "logger=none", f"run.root={tmp_path}",
               f"data.mirror={mirror}", cwd=tmp_path)  # any working directory: conf/ is found by absolute path
    assert done.returncode == 0, done.stderr
    for field in ("task", "method", "model", "test accuracy", "dev accuracy", "budget used", "wall time"):
        assert field in done.stdout
    assert len(list(tmp_path.rglob("results.json"))) == 1


def test_the_cli_logs_to_wandb_offline_without_an_api_key(mirror, tmp_path):
    done = cli("method=manual", "task=sst2", "setting.k=4", f"run.root={tmp_path}", f"data.mirror={mirror}")
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.rglob("offline-run-*")), "an offline W&B run folder is written into the run folder"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["method=bbt", "optimizer=adamw"], "optimizer=cma"),
        (["method=bbt", "method.budget=0"], "budget"),
        (["model.path=/no/such/model"], "does not exist"),
        (["data.mirror=/no/such/mirror"], "data mirror"),
        (["task=cb", "setting=few_shot", "setting.k=16"], "setting.k"),
        (["model=local"], "model.path"),
    ],
)
def test_bad_input_gets_one_clear_line_and_no_traceback(tmp_path, args, expected):
    if expected == "setting.k":
        from prompt_bench.tasks.loading import mirror_root

        if mirror_root("auto") is None:
            pytest.skip("the too-large k is found while sampling the data: needs the local data mirror")
    done = cli(*args, "logger=none", f"run.root={tmp_path}")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert expected in done.stderr


@pytest.mark.parametrize("group, value", [("task", "no_such_task"), ("method", "no_such_method"),
                                          ("experiment", "no_such_preset")])
def test_an_unknown_task_method_or_preset_lists_the_available_ones(tmp_path, group, value):
    done = cli(f"{group}={value}", "logger=none", f"run.root={tmp_path}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert value in done.stderr and "use one of" in done.stderr


def test_asking_again_for_a_finished_run_reprints_it_and_touches_nothing(mirror, tmp_path):
    args = ["method=manual", "task=sst2", "setting.k=4", "logger=none", f"run.root={tmp_path}", f"data.mirror={mirror}"]
    assert cli(*args).returncode == 0
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = cli(*args)
    assert again.returncode == 0 and "already finished" in again.stdout
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}


def test_overrides_inside_a_swept_group_are_forced_only_in_multirun_sweeps_of_that_group():
    from prompt_bench.cli import force_keys_of_swept_groups

    argv = ["-m", "method=bbt,clip_tuning", "method.budget=720", "task=sst2", "task.max_length=64", "seed=1,2"]
    assert force_keys_of_swept_groups(argv) == (
        ["-m", "method=bbt,clip_tuning", "++method.budget=720", "task=sst2", "task.max_length=64", "seed=1,2"],
        ["method.budget"],
    )
    single = ["method=bbt,clip_tuning", "method.budget=720"]  # not a multirun: Hydra's own rules apply
    assert force_keys_of_swept_groups(single) == (single, [])


def test_a_sweep_sets_a_key_in_every_job_whose_group_has_it_and_refuses_the_others_by_name(mirror, tmp_path):
    done = cli("-m", "setting=few_shot,fewglue", "setting.k=4", "method=manual", "task=rte", "logger=none",
               f"run.root={tmp_path}", f"data.mirror={mirror}", f"hydra.sweep.dir={tmp_path}/sweep")
    assert done.returncode == 1, done.stderr  # the sweep ran its other job, then says it did not fully succeed
    assert "setting.k is not a setting of setting=fewglue" in done.stderr
    assert "[sweep] 2 jobs: 1 done, 1 failed" in done.stdout
    assert "[sweep] failed: setting=fewglue" in done.stdout
    finished = list(tmp_path.rglob("results.json"))
    assert len(finished) == 1 and "few_shot" in finished[0].read_text()


def test_a_sweeps_jobs_share_one_wandb_group_named_after_the_sweep(mirror, tmp_path):
    import yaml

    done = cli("-m", "seed=13,21", "method=manual", "task=rte", "setting.k=2", "logger.mode=disabled",
               f"run.root={tmp_path}", f"data.mirror={mirror}", f"hydra.sweep.dir={tmp_path}/my-sweep")
    assert done.returncode == 0, done.stderr
    configs = [yaml.safe_load(p.read_text()) for p in tmp_path.rglob("config.yaml") if "seed" in p.parent.name]
    assert len(configs) == 2 and {c["logger"]["group"] for c in configs} == {"my-sweep"}


def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_result(mirror, tmp_path):
    """SIGKILL, not a polite interrupt: whatever the last checkpoint holds must be enough to finish the run
    exactly as an uninterrupted one does (same test score, same prompt, same metrics)."""
    import json
    import os
    import signal
    import time

    from prompt_bench.artifacts import load_tensors

    args = ["method=bbt", "task=sst2", "method.budget=120", "method.intrinsic_dim=20", "method.n_prompt_tokens=4",
            "optimizer.popsize=10", "method.eval_every=40", "logger=none", "run.progress=false", f"data.mirror={mirror}"]
    # One thread in all three processes: float reductions then run in the same order, so metrics match bit for bit.
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    reference = cli(*args, f"run.root={tmp_path / 'reference'}", env=env)
    assert reference.returncode == 0, reference.stderr

    job = subprocess.Popen([EXE, *args, f"run.root={tmp_path / 'killed'}"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "killed").rglob("checkpoint/state.json")):
        assert job.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    [state] = list((tmp_path / "killed").rglob("checkpoint/state.json"))
    assert json.loads(state.read_text())["calls"] < 120 and not list((tmp_path / "killed").rglob("results.json"))

    resumed = cli(*args, f"run.root={tmp_path / 'killed'}", env=env)
    assert resumed.returncode == 0, resumed.stderr
    [ref_dir], [run_dir] = [[p.parent for p in (tmp_path / d).rglob("results.json")] for d in ("reference", "killed")]
    ref, got = (json.loads((d / "results.json").read_text()) for d in (ref_dir, run_dir))
    assert got["test"] == ref["test"] and got["budget_used"] == ref["budget_used"] == 120
    a, _ = load_tensors(ref_dir / "prompt.safetensors")
    b, _ = load_tensors(run_dir / "prompt.safetensors")
    assert torch_equal(a["prompt"], b["prompt"])
    assert (ref_dir / "metrics.jsonl").read_text() == (run_dir / "metrics.jsonl").read_text()


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_version_and_help_say_what_prompt_bench_is():
    from prompt_bench import __version__

    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"prompt-bench {__version__}"
    shown = cli("--help")
    assert shown.returncode == 0
    assert shown.stdout.startswith("prompt-bench: config-driven experiments for prompt learning")
    assert "prompt-bench -m experiment=bbt_paper" in shown.stdout and "== Configuration groups ==" in shown.stdout
