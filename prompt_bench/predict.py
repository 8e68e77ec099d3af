"""`prompt-bench-predict <run> <inputs.jsonl>`: label new texts with a finished run's prompt.

Each input line is a JSON object with the task's fields (`{"sentence": "..."}` for SST-2; the task's
conf/task/<name>.yaml lists them under mirror.fields); a `label` is ignored. Each output line is the input with
`prediction` (the label name) and `probabilities` (over the task's labels) added. The run's own model, template,
label words and solution score them, as its test set was scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import OmegaConf

from prompt_bench.artifacts import load_tensors
from prompt_bench.errors import PromptBenchError
from prompt_bench.methods.base import Method, Solution
from prompt_bench.tasks.loading import json_lines
from prompt_bench.tasks.spec import Example, TaskSpec


def read_inputs(path: Path, task: TaskSpec) -> list[Example]:
    fields = list(task.field_names)
    examples = []
    try:
        for where, record in json_lines(path):
            missing = [f for f in fields if f not in record]
            if missing:
                raise PromptBenchError(f"{where}: no field {', '.join(missing)}; task {task.name} reads {', '.join(fields)}")
            examples.append(Example(fields={f: str(record[f]) for f in fields}, label=0))
    except (OSError, UnicodeDecodeError) as err:
        raise PromptBenchError(f"cannot read {path} ({err}): give a UTF-8 JSON-lines file") from None
    if not examples:
        raise PromptBenchError(f"{path} holds no inputs: one JSON object per line")
    return examples


def saved_solution(run: Path) -> tuple[dict[str, Any], type[Method], Solution]:
    """(the run's config, its method class, the solution it saved), for scoring or exporting it again."""
    from prompt_bench.experiment import method_class

    config_file = Path(run) / "config.yaml"
    if not (Path(run) / "results.json").is_file() or not config_file.is_file():
        raise PromptBenchError(f"{run} is not a finished run folder (no results.json / config.yaml): point at the "
                               "folder a finished `prompt-bench` run printed")
    config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
    if str(config["setting"]["name"]) == "multitask":
        raise PromptBenchError(f"{run} is a multitask run: use a single-task run's prompt")
    method_cls = method_class(str(config["method"]["name"]))
    tensors, meta = ({}, {})
    if (Path(run) / "prompt.safetensors").is_file():
        tensors, meta = load_tensors(Path(run) / "prompt.safetensors", fix="run the method again to write it")
    return config, method_cls, method_cls.restore(dict(tensors), meta, config["method"])


def run_precision(run: Path, config: dict[str, Any]) -> bool | str:
    """compute.bf16 for scoring again what `run` scored: "auto" (bf16 where this hardware has it natively) for a
    run that ran in bf16, so its predictions are the ones it made; fp32 for an fp32 run. Runs written before
    results.json recorded the precision go by their compute.bf16 (true or auto: "auto")."""
    from prompt_bench.config_values import bf16_mode

    ran = json.loads((Path(run) / "results.json").read_text()).get("precision")
    if ran is not None:
        return "auto" if ran == "bf16" else False
    return "auto" if bf16_mode("compute.bf16", config.get("compute", {}).get("bf16", False)) else False


def predictor(run: Path, device: str = "auto", trust_remote_code: bool = False):
    """(task, score): `score(examples)` -> [N, C] probabilities from `run`'s saved solution."""
    from prompt_bench.batching import encode_split
    from prompt_bench.models import build_backbone
    from prompt_bench.models.loading import ModelSpec
    from prompt_bench.plain_input import encode_plain

    config, method_cls, solution = saved_solution(run)
    method_cfg = config["method"]
    task = TaskSpec.from_config(config["task"])
    # Where the weights are comes from the run folder; whether to run their code is the user's call, here.
    model = ModelSpec.from_config({**config["model"], "trust_remote_code": trust_remote_code})
    backbone = build_backbone(model, device=device, bf16=run_precision(run, config))
    verbalizer = backbone.verbalizer(task.verbalizer)
    scorer = solution.scorer(backbone)
    backbone.model.eval()

    def score(examples: list[Example], batch_size: int = 32) -> torch.Tensor:
        if method_cls.reads_plain_input(method_cfg):
            split = encode_plain(examples, task, backbone, method_cls.prompt_length(method_cfg), verbalizer)
        else:
            split = encode_split(examples, task, backbone, method_cls.prompt_length(method_cfg),
                                 method_cls.placeholders(method_cfg), verbalizer)
        out = []
        with torch.no_grad():
            for start in range(0, len(split), batch_size):
                out.append(torch.softmax(scorer(split.batch(range(start, min(start + batch_size, len(split))))).float(), -1))
        return torch.cat(out).cpu()

    return task, score


def labelled(examples: list[Example], task: TaskSpec, probabilities: torch.Tensor) -> Iterator[dict[str, Any]]:
    for example, row in zip(examples, probabilities):
        yield {**example.fields, "prediction": task.labels[int(row.argmax())],
               "probabilities": {label: round(float(p), 6) for label, p in zip(task.labels, row)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prompt-bench-predict", description="Label new texts with a run's prompt.")
    parser.add_argument("run", type=Path, help="a finished run folder")
    parser.add_argument("inputs", type=Path, help="JSON lines with the task's fields (e.g. {\"sentence\": ...})")
    parser.add_argument("--out", type=Path, default=None, help="write JSON lines here (default: standard output)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let the run's model run its own code (never taken from the run folder)")
    args = parser.parse_args(argv)
    try:
        task, score = predictor(args.run, args.device, args.trust_remote_code)
        examples = read_inputs(args.inputs, task)
        rows = list(labelled(examples, task, score(examples)))
    except PromptBenchError as err:
        print(f"prompt-bench-predict: error: {str(err).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"{len(rows)} predictions written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
