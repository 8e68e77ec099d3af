"""Sweeps over GPU workers: the launcher configs in conf/hydra/launcher/ and the machine's GPU pool
(prompt_bench/gpu_pool.py). The sweeps are real multiruns through the console script, on the CPU, with a pool of
two pretend GPUs (PROMPT_BENCH_GPUS=2): a job sets CUDA_VISIBLE_DEVICES to its GPU, which the CPU build of torch
ignores."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

# the script installed beside this interpreter first: another prompt-bench on PATH may be another install
_BESIDE = Path(sys.executable).parent / "prompt-bench"
EXE = str(_BESIDE) if _BESIDE.is_file() else shutil.which("prompt-bench") or str(_BESIDE)

CLAIMED = re.compile(r"GPU pool .*: this job runs on GPU (\d+)")


def _env(pool: Path, gpus: str = "2") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(WANDB_MODE="offline", PROMPT_BENCH_GPU_POOL=str(pool), PROMPT_BENCH_GPUS=gpus)
    return env


def sweep(launcher: str, tmp_path: Path, mirror: Path, *extra: str) -> subprocess.CompletedProcess:
    """Two tiny jobs (zero-shot CB, two seeds) through hydra/launcher=<launcher>."""
    args = [EXE, "-m", f"hydra/launcher={launcher}", "method=manual", "task=cb", "setting=few_shot", "setting.k=2", "logger=none",
            "seed=13,21", f"run.root={tmp_path}", f"data.mirror={mirror}", f"hydra.sweep.dir={tmp_path}/sweep",
            "run.progress=false", *extra]
    return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path / "pool"),
                          timeout=600)


def assert_both_jobs_finished(sweep_dir: Path) -> None:
    finished = sorted(sweep_dir.rglob("results.json"))
    assert len(finished) == 2, finished
    assert sorted(json.loads(p.read_text())["seed"] for p in finished) == [13, 21]
    assert all(p.parent.parent.parent.parent.parent == sweep_dir for p in finished)  # <task>/<method>/<model>/<seed>
    assert (sweep_dir / "multirun.yaml").is_file()


def assert_pool_is_free(pool: Path) -> None:
    from prompt_bench.gpu_pool import GpuPool

    assert GpuPool(pool, ["0", "1"]).busy() == []


def test_a_joblib_sweep_runs_two_jobs_side_by_side_each_on_a_gpu_of_the_pool(mirror, tmp_path):
    done = sweep("joblib_gpus", tmp_path, mirror, "hydra.launcher.n_jobs=2")
    assert done.returncode == 0, done.stderr
    assert "Joblib.Parallel(n_jobs=2" in done.stdout and "launching 2 jobs" in done.stdout
    assert done.stdout.count("test macro_f1") == 2  # each job's one-screen summary
    assert len(CLAIMED.findall(done.stdout)) == 2 and set(CLAIMED.findall(done.stdout)) <= {"0", "1"}
    assert_both_jobs_finished(tmp_path / "sweep")
    assert_pool_is_free(tmp_path / "pool")


def test_a_submitit_local_sweep_runs_each_job_in_its_own_process_on_a_gpu_of_the_pool(mirror, tmp_path):
    done = sweep("submitit_local_gpus", tmp_path, mirror)
    assert done.returncode == 0, done.stderr
    assert "Submitit 'local' sweep output dir" in done.stdout
    logs = [p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.out")]
    assert len(logs) == 2 and all("test macro_f1" in log and "completed successfully" in log for log in logs)
    # every job was shown the pool's two GPUs (submitit alone would show none) and claimed one of them
    assert all(len(CLAIMED.findall(log)) == 1 for log in logs)
    assert_both_jobs_finished(tmp_path / "sweep")
    assert_pool_is_free(tmp_path / "pool")


def test_a_ray_sweep_runs_each_job_as_a_ray_task(mirror, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the optional extra: pip install -e '.[ray]'")
    done = sweep("ray_gpus", tmp_path, mirror, "hydra.launcher.ray.remote.num_gpus=0",
                 "hydra.launcher.ray.remote.num_cpus=1")
    assert done.returncode == 0, done.stderr
    assert_both_jobs_finished(tmp_path / "sweep")


def test_the_slurm_launcher_asks_for_a_gpu_per_job_and_requeues_a_job_with_the_same_arguments(tmp_path, monkeypatch):
    """No cluster here: the sbatch script is rendered (srun faked) and the requeue hook is called as submitit
    calls it on a preemption or time limit (USR2). Re-running a job's overrides resumes its run folder."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from prompt_bench.cli import CONF_DIR

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    submitted = {}
    monkeypatch.setattr(submitit.AutoExecutor, "map_array",
                        lambda self, fn, *args: submitted.update(executor=self, fn=fn, args=args) or [])

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("config", return_hydra_config=True,
                      overrides=["hydra/launcher=submitit_slurm_gpus", "hydra.launcher.partition=gpu",
                                 f"hydra.sweep.dir={tmp_path}/sweep", "method=manual", "task=cb", "logger=none"])
    HydraConfig.instance().set_config(cfg)
    try:
        launcher = instantiate(cfg.hydra.launcher)
        launcher.setup(hydra_context=None, task_function=None, config=cfg)
        launcher.launch([["seed=13"], ["seed=21"]], initial_job_idx=0)
    finally:
        HydraConfig.instance().cfg = None

    slurm = submitted["executor"]._executor
    script = slurm._make_submission_file_text("python -m submitit.core._submit", "uid")
    for flag in ("--gpus-per-node=1", "--partition=gpu", "--requeue", "--signal=USR2@120", "--time=240",
                 "--job-name=prompt-bench"):
        assert f"#SBATCH {flag}" in script
    assert slurm.max_num_timeout > 0  # a timed-out job is requeued, not ended
    assert slurm.parameters["array_parallelism"] == 32

    # what submitit does on USR2: ask the callable for its checkpoint and resubmit that
    overrides, *rest = [column[0] for column in submitted["args"]]
    requeued = submitit.helpers.DelayedSubmission(submitted["fn"], overrides, *rest)._checkpoint_function()
    assert requeued is not None and requeued.function is launcher
    assert requeued.args == (overrides, *rest) and overrides == ["seed=13"]


# ---- the pool itself, with pretend GPUs ----------------------------------------------------------------------

_CLAIMER = r"""
import os, sys, time, pathlib
from prompt_bench.gpu_pool import job_gpu
name, folder = sys.argv[1], pathlib.Path(sys.argv[2])
with job_gpu() as gpu:
    (folder / f"{name}.claimed").write_text(f"{gpu} {os.environ['CUDA_VISIBLE_DEVICES']}")
    while not (folder / f"{name}.release").exists():
        time.sleep(0.05)
"""


def _wait_for(path: Path, seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear in {seconds} s"
        time.sleep(0.05)
    time.sleep(0.05)
    return path.read_text()


def test_concurrent_jobs_get_different_gpus_a_third_waits_for_one_and_every_lock_is_freed(tmp_path):
    from prompt_bench.gpu_pool import GpuPool

    pool = tmp_path / "pool"

    def start(name):
        return subprocess.Popen([sys.executable, "-c", _CLAIMER, name, str(tmp_path)], env=_env(pool), cwd=ROOT)

    jobs = {name: start(name) for name in ("a", "b")}
    try:
        claims = {name: _wait_for(tmp_path / f"{name}.claimed").split() for name in jobs}
        assert {gpu for gpu, _ in claims.values()} == {"0", "1"}
        assert all(gpu == visible for gpu, visible in claims.values())  # CUDA_VISIBLE_DEVICES = the claimed GPU
        assert sorted(GpuPool(pool, ["0", "1"]).busy()) == ["0", "1"]

        jobs["c"] = start("c")  # both GPUs are taken: it waits
        time.sleep(2.5)
        assert not (tmp_path / "c.claimed").exists() and jobs["c"].poll() is None

        (tmp_path / "a.release").touch()  # a's job ends: c gets a's GPU
        assert jobs["a"].wait(timeout=30) == 0
        assert _wait_for(tmp_path / "c.claimed").split()[0] == claims["a"][0]

        jobs["b"].send_signal(signal.SIGKILL)  # a killed job frees its GPU too
        jobs["b"].wait(timeout=30)
        (tmp_path / "c.release").touch()
        assert jobs["c"].wait(timeout=30) == 0
        assert GpuPool(pool, ["0", "1"]).busy() == []
    finally:
        for job in jobs.values():
            if job.poll() is None:
                job.kill()


@pytest.fixture
def pool_env(tmp_path, monkeypatch):
    from prompt_bench import gpu_pool

    monkeypatch.setenv("PROMPT_BENCH_GPU_POOL", str(tmp_path / "pool"))
    monkeypatch.setenv("PROMPT_BENCH_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpu_pool, "_bound", None)
    return gpu_pool.GpuPool(tmp_path / "pool", ["0", "1"])


def test_a_job_that_fails_frees_its_gpu_and_gives_back_cuda_visible_devices(pool_env):
    from prompt_bench.gpu_pool import job_gpu

    with pytest.raises(RuntimeError):
        with job_gpu() as gpu:
            assert gpu == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
            assert pool_env.busy() == ["0"]
            raise RuntimeError("the job failed")
    assert pool_env.busy() == [] and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_the_pool_stays_out_of_cpu_jobs_pinned_jobs_machines_without_gpus_and_runs_that_do_not_ask(pool_env,
                                                                                                    monkeypatch):
    from prompt_bench.gpu_pool import job_gpu

    for device in ("cpu", "cuda:1"):
        with job_gpu(device) as gpu:
            assert gpu is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPUs: the job runs on the CPU
    monkeypatch.setenv("PROMPT_BENCH_GPUS", "auto")
    with job_gpu() as gpu:
        assert gpu is None and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.delenv("PROMPT_BENCH_GPU_POOL")  # the pool is off unless a launcher (or the user) names it
    monkeypatch.setenv("PROMPT_BENCH_GPUS", "2")
    with job_gpu() as gpu:
        assert gpu is None
    assert not pool_env.dir.exists()


def test_a_process_that_started_cuda_keeps_to_its_gpu_in_later_jobs(pool_env, monkeypatch):
    """A joblib worker runs job after job; once CUDA has started in it, CUDA_VISIBLE_DEVICES no longer moves it."""
    from prompt_bench import gpu_pool

    other = pool_env.try_claim()  # GPU 0 is taken by another job: this worker's first job gets GPU 1
    cuda = {"started": False}
    monkeypatch.setattr(gpu_pool, "cuda_started", lambda: cuda["started"])
    with gpu_pool.job_gpu() as gpu:
        assert gpu == "1"
        cuda["started"] = True  # the job ran on the GPU
    other.release()
    assert pool_env.busy() == []
    with gpu_pool.job_gpu() as gpu:  # GPU 0 is free now, but this process can only use GPU 1
        assert gpu == "1" and pool_env.busy() == ["1"]
    assert pool_env.busy() == []


def test_the_pool_counts_gpus_without_cuda(monkeypatch):
    from prompt_bench.gpu_pool import gpu_count, gpu_ids, gpu_list

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert gpu_ids() == ["2", "5"] and gpu_ids("1") == ["2"] and gpu_list("auto") == "2,5"
    assert gpu_ids("3") == ["0", "1", "2"]  # more than found: pretend GPUs 0..N-1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu_ids() == [] and gpu_count("auto", 1) == 1 and gpu_list("auto") == ""
    with pytest.raises(ValueError, match="PROMPT_BENCH_GPUS"):
        gpu_ids("many")
