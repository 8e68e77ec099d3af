"""What a long run shows while it works: run.log, progress on a terminal or not, and a sweep's state."""

from __future__ import annotations

import io
import json
import logging

import torch

from prompt_bench import experiment, progress
from prompt_bench.batching import EncodedSplit
from prompt_bench.evaluation import predict

from test_cli import cli
from test_experiment import make, run_interrupted_then_resumed


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _split(n: int) -> EncodedSplit:
    return EncodedSplit(ids=[[1, 2, 3]] * n, target=[1] * n, labels=[0] * n, groups=[None] * n, pad_id=0,
                        device=torch.device("cpu"))


def _score(batch):
    return torch.zeros(len(batch), 2)


def test_evaluation_off_a_terminal_prints_plain_progress_lines_with_the_total(caplog):
    stream = io.StringIO()  # a pipe, a sweep's log, Slurm's output file
    progress.configure(True, every_s=0, stream=stream)
    with caplog.at_level(logging.INFO, logger="prompt_bench.progress"):
        predict(_score, _split(50), batch_size=5, desc="test")
    lines = [r.getMessage() for r in caplog.records if r.name == "prompt_bench.progress"]
    assert len(lines) == 10  # one per 10%, here every batch of 5
    assert all(line.startswith("test: ") and "/50 examples" in line and "left" in line for line in lines)
    assert lines[-1].startswith("test: 50/50 examples (100%)")
    assert "\r" not in stream.getvalue() and all("\r" not in line for line in lines)


def test_progress_lines_wait_for_the_interval_and_are_off_with_run_progress_false(caplog):
    with caplog.at_level(logging.INFO, logger="prompt_bench.progress"):
        progress.configure(True, every_s=3600, stream=io.StringIO())
        predict(_score, _split(50), batch_size=5, desc="dev")  # far quicker than the interval: nothing to say
        progress.configure(False, every_s=0, stream=io.StringIO())
        predict(_score, _split(50), batch_size=5, desc="dev")
    assert [r for r in caplog.records if r.name == "prompt_bench.progress"] == []


def test_on_a_terminal_progress_is_one_bar_and_no_log_lines(caplog):
    terminal = _Terminal()
    progress.configure(True, every_s=0, stream=terminal)
    with caplog.at_level(logging.INFO, logger="prompt_bench.progress"):
        predict(_score, _split(50), batch_size=5, desc="test")
    assert "test" in terminal.getvalue() and "\r" in terminal.getvalue()
    assert [r for r in caplog.records if r.name == "prompt_bench.progress"] == []
    progress.configure(True)


def test_run_log_records_every_phase_and_the_final_metric_and_a_resumed_run_appends(mirror, tmp_path, tiny_models):
    model = ["model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm", "task=rte"]
    cfg = make(mirror, *model, "method=bbt", "method.budget=40", "method.intrinsic_dim=8", "method.n_prompt_tokens=3",
               "optimizer.popsize=10", "method.eval_every=20")
    results = run_interrupted_then_resumed(lambda folder: experiment.run(cfg, folder), tmp_path / "run", at=30)
    log = (tmp_path / "run" / "run.log").read_text()
    for phase in ("load model", "data", "train", "test", "dev"):
        assert f"{phase}: started" in log and f"{phase}: done in" in log
    assert "command: prompt-bench" in log and "config hash" in log
    assert "dev evaluation at 20 API calls" in log and "dev evaluation at 40 API calls" in log
    assert "selected prompt: selected=at_call" in log
    assert "interrupted: run the same command again to resume" in log
    first, resumed = log.split("resuming the interrupted run")
    assert "train: started" in first and "finished: test accuracy" in resumed
    assert f"test accuracy {results['test']['accuracy']:.4f}" in resumed
    assert set(results["phase_seconds"]) == {"load model", "data", "train", "test", "dev"}


def test_a_sweep_prints_a_line_per_job_and_the_count_and_exits_non_zero_when_a_job_failed(mirror, tmp_path, tiny_models):
    sweep = tmp_path / "sweep"
    done = cli("-m", "method=manual", "task=sst2,rte,mrpc,cb", "setting=few_shot", "seed=13", "model=local",
               f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm", "logger=none",
               f"data.mirror={mirror}", f"run.root={tmp_path}", f"hydra.sweep.dir={sweep}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("[sweep")]
    jobs = [line for line in lines if line.startswith("[sweep ") and "/4]" in line]
    assert len(jobs) == 4, done.stdout
    assert sum("FAILED" in line for line in jobs) == 1  # cb has 16 examples of a class, too few for few-shot k=16
    assert "[sweep] 4 jobs: 3 done, 1 failed" in done.stdout
    assert any(line.startswith("[sweep] failed: ") and "task=cb" in line for line in lines)
    assert done.returncode == 1
    assert len((sweep / "jobs.jsonl").read_text().splitlines()) == 4
    assert json.loads((sweep / "jobs.jsonl").read_text().splitlines()[0])["ok"] is True
