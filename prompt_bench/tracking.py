"""Where a run's numbers go: metrics.jsonl / results.json in the run folder, and W&B when it works.

W&B is a mirror of the local files, never a dependency: without an API key it runs offline, and any
W&B failure is logged as a warning while the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import string
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
    return "online" if has_key else "offline"


#: the file in a run folder that keeps its W&B run id, so a resumed run continues the same W&B run
WANDB_ID_FILE = "wandb_id.txt"
#: the x-axis of every curve, by how a method spends its budget: curves of methods of one kind line up
X_AXIS = {"API calls": "api_calls", "steps": "optimizer_step"}


class Tracker:
    def __init__(self, run_dir: Path, logger_cfg: dict[str, Any] | None, config: dict[str, Any], name: str,
                 group: str, job_type: str, tags: list[str], step_unit: str = "steps"):
        self.run_dir = run_dir
        self.step_unit = step_unit
        self.x_axis = X_AXIS.get(step_unit, "optimizer_step")
        self.name = name
        self.metrics_path = run_dir / "metrics.jsonl"
        self.url: str | None = None
        self.inputs: list[dict[str, str]] = []
        self._wandb = None
        if logger_cfg and logger_cfg.get("name") == "wandb":
            self._start_wandb(logger_cfg, config, name, group, job_type, tags)

    def _run_id(self) -> str:
        file = self.run_dir / WANDB_ID_FILE
        if file.is_file() and file.read_text().strip():
            return file.read_text().strip()
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id shape
        file.write_text(run_id + "\n")
        return run_id

    def _start_wandb(self, cfg, config, name, group, job_type, tags) -> None:
        mode = _wandb_mode(str(cfg.get("mode", "auto")))
        if mode == "disabled":
            return
        try:
            import wandb

            self._wandb = wandb.init(
                project=cfg.get("project", "prompt-bench"),
                entity=cfg.get("entity"),
                group=cfg.get("group") or group,
                job_type=job_type,
                tags=list(tags) + list(cfg.get("tags") or []),
                name=name,
                config=config,
                dir=str(self.run_dir),
                mode=mode,
                id=self._run_id(),
                resume="allow",  # an interrupted run folder continues its own W&B run (also when synced later)
                reinit="finish_previous",
                settings=wandb.Settings(silent=True, init_timeout=float(cfg.get("init_timeout", 60))),
            )
            self._wandb.define_metric(self.x_axis)
            self._wandb.define_metric("*", step_metric=self.x_axis)
            self.url = self._wandb.url if mode == "online" else None
        except Exception as err:  # noqa: BLE001 - W&B must never end a run
            log.warning("W&B unavailable (%s); the run goes on and its results are in %s (logger=none or "
                        "WANDB_MODE=offline skips the wait)", str(err).splitlines()[0] if str(err) else err, self.run_dir)
            self._wandb = None

    def log(self, record: dict[str, Any], step: int) -> None:
        """One step-wise record (step = API calls for black-box methods, optimizer steps otherwise)."""
        line = {"step": step, **record}
        with self.metrics_path.open("a") as out:
            out.write(json.dumps(line) + "\n")
        dev = {k[4:]: v for k, v in record.items() if k.startswith("dev/")}
        if dev:  # run.log keeps every dev evaluation; train steps stay in metrics.jsonl only
            log.info("dev evaluation at %s %s: %s", step, self.step_unit,
                     ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in dev.items()))
        if self._wandb is not None:
            try:
                # the x-axis is a logged value, not W&B's own step: a resumed run logs again the steps after its
                # checkpoint, which W&B's monotonic step would drop
                self._wandb.log({**record, self.x_axis: step})
            except Exception as err:  # noqa: BLE001
                log.warning("W&B log failed (%s)", err)

    def use_inputs(self, files: list[Path]) -> None:
        """Declare prompts the run starts from (a method.init or a recycling source): online, as the W&B run's input
        artifacts (lineage); in every mode, in the metadata of the prompt artifact the run logs (W&B cannot use
        artifacts offline, so a run synced later keeps its lineage there)."""
        import hashlib

        self.inputs = [{"file": str(f), "sha256": hashlib.sha256(Path(f).read_bytes()).hexdigest()} for f in files]
        if self._wandb is None or not files or self._wandb.settings.mode == "offline":
            return
        try:
            import wandb

            for file in files:
                artifact = wandb.Artifact(name=_artifact_name(f"input-{Path(file).parent.name}-{Path(file).stem}"),
                                          type="prompt", metadata=_prompt_meta(Path(file)))
                artifact.add_file(str(file))
                self._wandb.use_artifact(artifact)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B input artifact failed (%s)", err)

    def finish(self, summary: dict[str, Any], prompt_file: Path | None) -> None:
        if self._wandb is None:
            return
        try:
            import wandb

            for key, value in summary.items():
                if isinstance(value, (int, float, str)):
                    self._wandb.summary[key] = value
            if prompt_file is not None and prompt_file.is_file():
                # one name per (task, method, model, seed): a rerun is a new version of the same artifact
                artifact = wandb.Artifact(name=_artifact_name(self.name), type="prompt",
                                          metadata={**_prompt_meta(prompt_file), "inputs": self.inputs})
                artifact.add_file(str(prompt_file))
                json_file = prompt_file.with_suffix(".json")
                if json_file.is_file():
                    artifact.add_file(str(json_file))
                self._wandb.log_artifact(artifact)
            self._wandb.finish()
        except Exception as err:  # noqa: BLE001
            log.warning("W&B finish failed (%s)", err)
        self._wandb = None


def _artifact_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:128]


def _prompt_meta(prompt_file: Path) -> dict[str, Any]:
    json_file = prompt_file.with_suffix(".json")
    try:
        return json.loads(json_file.read_text()) if json_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log_tables(tables: dict[str, tuple[list[str], list[list[Any]]]], requested: str, project: str,
               entity: str | None, group: str, directory: Path) -> bool:
    """Log {name: (columns, rows)} as wandb.Tables to a new W&B run (job type `report`). `requested` is a
    logger mode; `auto` logs only when W&B is reachable online (an API key), so a report never leaves an
    offline run behind unasked. Never fatal: False when nothing was logged."""
    mode = _wandb_mode(requested)
    if mode == "disabled" or (requested == "auto" and mode != "online"):
        return False
    try:
        import wandb

        run = wandb.init(project=project, entity=entity, group=group, job_type="report", name=f"report-{group}",
                         dir=str(directory), mode=mode, reinit="finish_previous", settings=wandb.Settings(silent=True))
        run.log({name: wandb.Table(columns=columns, data=[[_plain(v) for v in row] for row in rows])
                 for name, (columns, rows) in tables.items()})
        run.finish()
        return True
    except Exception as err:  # noqa: BLE001 - W&B must never end a report
        log.warning("W&B unavailable for the report tables (%s)", str(err).splitlines()[0] if str(err) else err)
        return False


def _plain(value: Any) -> Any:
    """A table value W&B takes: numbers and strings as they are, anything else as text."""
    if value == "":
        return None
    return value if isinstance(value, (int, float, str, bool)) else str(value)
