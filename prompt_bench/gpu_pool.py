"""A pool of the GPUs of one machine, shared by every job running on it (`hydra/launcher=joblib_gpus` or
`submitit_local_gpus`, or plain runs started side by side by hand).

Each GPU is a lock file `<pool dir>/gpu<id>.lock`. At the start of a job, before anything in its process has
touched CUDA, the job takes the first free GPU, sets `CUDA_VISIBLE_DEVICES` to it (so torch sees that one GPU as
`cuda:0`) and holds the lock until the job ends, by error or interrupt too. When every GPU is taken it waits for
one; with no GPUs it runs on the CPU. A lock is held by an open file, so a job that is killed frees its GPU.

A job calls `job_gpu` (prompt_bench/cli.py does, for every job of every launcher). The pool is on when
`PROMPT_BENCH_GPU_POOL` names its directory (the launcher configs set it through `hydra.job.env_set`), and reads:

* `PROMPT_BENCH_GPUS`: `auto` (the ids in `CUDA_VISIBLE_DEVICES` when it is set, else those `nvidia-smi -L`
  lists) or a count N (the first N of those; ids 0..N-1 when fewer are found).

Nothing here imports torch or asks CUDA anything: CUDA reads `CUDA_VISIBLE_DEVICES` once, when it starts in a
process, so counting GPUs through torch would pin the process to the GPUs it saw before it had claimed one.
A process that has started CUDA (a joblib worker that ran a job before) is tied to the GPU it had then: its later
jobs claim that GPU again, waiting for it if need be, instead of the first free one.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from filelock import FileLock, Timeout
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

POOL_ENV = "PROMPT_BENCH_GPU_POOL"
GPUS_ENV = "PROMPT_BENCH_GPUS"
VISIBLE = "CUDA_VISIBLE_DEVICES"

#: the GPU this process started CUDA with, while it held it in the pool (None: CUDA not started under the pool)
_bound: str | None = None


def _nvidia_smi_ids() -> list[str]:
    """GPU indices as `nvidia-smi -L` lists them (it asks the driver, not CUDA); [] without a driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return re.findall(r"^GPU (\d+):", out, flags=re.MULTILINE)


def _visible_ids() -> list[str] | None:
    """The ids in CUDA_VISIBLE_DEVICES ([] when it hides every GPU), or None when it is not set."""
    value = os.environ.get(VISIBLE)
    if value is None:
        return None
    ids = []
    for item in value.split(","):
        item = item.strip()
        if not item or item.startswith("-") or item == "NoDevFiles":
            break  # CUDA stops at the first invalid entry
        ids.append(item)
    return ids


def gpu_ids(spec: str | int | None = "auto") -> list[str]:
    """The GPUs of the pool: `auto` or None = every GPU found, N = the first N of them (0..N-1 if fewer)."""
    spec = "auto" if spec is None or str(spec).strip() in ("", "auto") else str(spec).strip()
    found = _visible_ids()
    if found is None:
        found = _nvidia_smi_ids()
    if spec == "auto":
        return found
    try:
        count = int(spec)
    except ValueError:
        raise ValueError(f"{GPUS_ENV}={spec}: use auto or a number of GPUs") from None
    if count < 0:
        raise ValueError(f"{GPUS_ENV}={spec}: use auto or a number of GPUs")
    return found[:count] if len(found) >= count else [str(i) for i in range(count)]


def gpu_count(spec: str | int | None = "auto", minimum: int = 0) -> int:
    """`${pb_gpu_count:<spec>[,<minimum>]}`: how many GPUs the pool has (e.g. a launcher's n_jobs)."""
    return max(len(gpu_ids(spec)), int(minimum))


def gpu_list(spec: str | int | None = "auto") -> str:
    """`${pb_gpu_list:<spec>}`: the pool's GPUs as a CUDA_VISIBLE_DEVICES value ("" when there are none)."""
    return ",".join(gpu_ids(spec))


for _name, _fn in (("pb_gpu_count", gpu_count), ("pb_gpu_list", gpu_list)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


@dataclass
class Claim:
    gpu: str
    lock: FileLock

    def release(self) -> None:
        self.lock.release(force=True)


class GpuPool:
    """Lock files `gpu<id>.lock` in one directory, one per GPU id."""

    def __init__(self, directory: str | os.PathLike, ids: Sequence[str], poll_s: float = 1.0):
        self.dir = Path(directory)
        self.ids = [str(i) for i in ids]
        self.poll_s = poll_s

    def lock_path(self, gpu: str) -> Path:
        return self.dir / f"gpu{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)}.lock"

    def _prepare(self) -> None:
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True, exist_ok=True)
            try:  # one pool for every user of the machine (no sticky bit: it would stop others opening the files)
                self.dir.chmod(0o777)
            except OSError:
                pass

    def try_claim(self, only: str | None = None) -> Claim | None:
        """The first free GPU (or `only` that one), locked; None when all are taken."""
        self._prepare()
        for gpu in [only] if only is not None else self.ids:
            lock = FileLock(str(self.lock_path(gpu)), mode=0o666, thread_local=False, preserve_lock_file=True)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            return Claim(gpu, lock)
        return None

    def claim(self, only: str | None = None, timeout: float | None = None) -> Claim:
        """Wait for a free GPU (or for `only`) and lock it; TimeoutError after `timeout` seconds."""
        start = time.monotonic()
        told = False
        while True:
            claim = self.try_claim(only)
            if claim is not None:
                return claim
            if timeout is not None and time.monotonic() - start >= timeout:
                raise TimeoutError(f"no free GPU in {self.dir} after {timeout:g} s")
            if not told:
                what = f"GPU {only}" if only is not None else f"a free GPU (all {len(self.ids)} are taken)"
                log.info("GPU pool %s: waiting for %s", self.dir, what)
                told = True
            time.sleep(self.poll_s * (0.5 + random.random()))  # jitter: waiters do not poll in step

    def busy(self) -> list[str]:
        """GPUs whose lock someone holds right now (for tests and diagnostics)."""
        taken = []
        for gpu in self.ids:
            claim = self.try_claim(gpu)
            if claim is None:
                taken.append(gpu)
            else:
                claim.release()
        return taken


def cuda_started() -> bool:
    """Has this process started CUDA? (Then CUDA_VISIBLE_DEVICES no longer changes which GPU it uses.)
    Asks without starting it: torch's lazy-init flag, and whether the driver library is loaded at all."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_initialized():
                return True
        except Exception:  # noqa: BLE001 - a torch without CUDA support
            pass
    try:
        with open("/proc/self/maps") as maps:
            return any("libcuda.so" in line for line in maps)
    except OSError:
        return torch is not None  # cannot tell: assume the worst once torch is loaded


@contextmanager
def job_gpu(device: str = "auto") -> Iterator[str | None]:
    """Hold a GPU of the pool for the duration of one job; yields its id, or None when the job does not use the
    pool (pool off, `compute.device` cpu or pinned to `cuda:N`, no GPUs: the job runs as it would without it)."""
    global _bound
    directory = os.environ.get(POOL_ENV, "").strip()
    device = str(device).strip().lower()
    if not directory or device == "cpu" or device.startswith("cuda:"):
        yield None
        return
    if cuda_started():
        if _bound is None:
            log.warning("GPU pool %s: CUDA was started in this process before it claimed a GPU, so the pool cannot "
                        "choose its GPU; running without the pool", directory)
            yield None
            return
        ids = [_bound]  # the only GPU this process can use: wait for it
    else:
        ids = gpu_ids(os.environ.get(GPUS_ENV, "auto"))
        if not ids:
            log.info("GPU pool %s: no GPUs found, running on the CPU", directory)
            yield None
            return
    claim = GpuPool(directory, ids).claim()
    before = os.environ.get(VISIBLE)
    try:
        os.environ[VISIBLE] = claim.gpu
        log.info("GPU pool %s: this job runs on GPU %s", directory, claim.gpu)
        yield claim.gpu
    finally:
        if cuda_started():
            _bound = claim.gpu  # this process can only use this GPU from now on
        elif before is None:
            os.environ.pop(VISIBLE, None)
        else:
            os.environ[VISIBLE] = before
        claim.release()
