"""What a sweep shows while it runs: one line per finished job, with the sweep's count and the time left.

A Hydra callback (conf/config.yaml `hydra.callbacks`). Every finished job appends its line to
`<sweep dir>/jobs.jsonl` (under a file lock: launchers may run jobs in other processes) and prints
`[sweep 3/12] task=rte seed=21 method=bbt: accuracy 0.5412 in 83 s | 3 done, 0 failed, 9 to go, about 12 min left`;
the time left is the sweep's elapsed time per finished job times the jobs still to go, so parallel workers are
accounted for. When the sweep ends it prints the totals and one line per failed job, and `prompt-bench` exits
non-zero if any failed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from prompt_bench.progress import duration

STATUS_FILE = "jobs.jsonl"
START_FILE = "sweep_start.json"

#: failed jobs of the sweep that ran in this process (read by `prompt_bench.cli.main` for its exit status)
failed_jobs: list[dict[str, Any]] = []


def sweep_size(config: DictConfig) -> int:
    """How many jobs the basic sweeper makes from the command line and the sweeper's `params`."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))


def _overrides(config: DictConfig) -> str:
    return " ".join(o for o in config.hydra.overrides.task if not o.startswith(("hydra.", "++hydra.")))


def _outcome(job_return: JobReturn) -> tuple[bool, str]:
    """(succeeded, what to print) for a job: its headline metric, or its error."""
    if job_return.status != JobStatus.COMPLETED:
        error = job_return._return_value
        return False, (str(error).splitlines()[0] if str(error) else type(error).__name__)
    value = job_return.return_value
    if getattr(value, "error", None):
        return False, str(value.error)
    results = getattr(value, "results", None)
    if isinstance(results, dict) and "test" in results and "metric" in results:
        return True, f"dev: {float(value):.4f}, test: {results['metric']} {results['test'][results['metric']]:.4f}"
    return True, "done"


class SweepStatus(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        failed_jobs.clear()
        folder = Path(str(config.hydra.sweep.dir))
        folder.mkdir(parents=True, exist_ok=True)
        try:
            total = sweep_size(config)
        except Exception:  # another sweeper (optuna, ...): the count is unknown
            total = None
        with FileLock(str(folder / STATUS_FILE) + ".lock"):
            (folder / STATUS_FILE).unlink(missing_ok=True)  # a relaunch reports its own jobs
            (folder / START_FILE).write_text(json.dumps({"start": time.time(), "total": total}))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_start = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.mode", default=None) != RunMode.MULTIRUN:
            return
        folder = Path(str(config.hydra.sweep.dir))
        ok, what = _outcome(job_return)
        seconds = time.time() - getattr(self, "_job_start", time.time())
        entry = {"overrides": _overrides(config), "ok": ok, "result": what, "seconds": round(seconds, 1)}
        with FileLock(str(folder / STATUS_FILE) + ".lock"):
            with (folder / STATUS_FILE).open("a") as out:
                out.write(json.dumps(entry) + "\n")
            jobs = _read(folder)
        start = json.loads((folder / START_FILE).read_text()) if (folder / START_FILE).is_file() else {}
        total, done = start.get("total"), len(jobs)
        failed = sum(not j["ok"] for j in jobs)
        count = f"{done} done, {failed} failed"
        if total:
            left = max(total - done, 0)
            elapsed = time.time() - float(start.get("start", time.time()))
            count += f", {left} to go" + (f", about {duration(elapsed / done * left)} left" if left else "")
        position = f"{done}/{total}" if total else str(done)
        print(f"[sweep {position}] {entry['overrides']}: {'' if ok else 'FAILED: '}{what} in {duration(seconds)} | {count}",
              flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        jobs = _read(folder)
        failed = [j for j in jobs if not j["ok"]]
        failed_jobs[:] = failed
        print(f"[sweep] {len(jobs)} jobs: {len(jobs) - len(failed)} done, {len(failed)} failed "
              f"(one line each in {folder / STATUS_FILE})", flush=True)
        for job in failed:
            print(f"[sweep] failed: {job['overrides']}: {job['result']}", flush=True)


def _read(folder: Path) -> list[dict[str, Any]]:
    path = folder / STATUS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
