"""A user adds a task with one YAML file in their own folder and their data in jsonl, csv or tsv: no code, and it
works wherever a task name is accepted (task=, multitask's setting.tasks)."""

from __future__ import annotations

import json

import pytest

from test_cli import cli

REVIEWS = [("a delight from start to finish", "pos"), ("tedious and overlong", "neg"), ("warm and funny", "pos"),
           ("a waste of a good cast", "neg"), ("sharp, moving, alive", "pos"), ("flat and lifeless", "neg")] * 3


def own_task(folder, fmt):
    data = folder / "data"
    data.mkdir(parents=True)
    for split in ("train", "test"):
        if fmt == "jsonl":
            text = "".join(json.dumps({"review": {"body": t}, "stars": y}) + "\n" for t, y in REVIEWS)
        else:
            sep = "," if fmt == "csv" else "\t"
            text = f"body{sep}stars\n" + "".join(f'"{t}"{sep}{y}\n' if fmt == "csv" else f"{t}{sep}{y}\n" for t, y in REVIEWS)
        (data / f"{split}.{fmt}").write_text(text)
    field = "review.body" if fmt == "jsonl" else "body"
    (folder / "task").mkdir()
    (folder / "task" / "my_reviews.yaml").write_text(f"""\
name: my_reviews
labels: [neg, pos]
verbalizer: [bad, great]
template: "{{text}} . It was {{mask}} ."
metric: accuracy
mirror:
  format: {fmt}
  dir: {data}
  files: {{train: train.{fmt}, test: test.{fmt}}}
  fields: {{text: {field}}}
  label: stars
""")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv"])
def test_a_task_from_your_own_folder_runs_like_a_packaged_one(tmp_path, fmt, tiny_models):
    own_task(tmp_path / "my_conf", fmt)
    done = cli("--config-dir", str(tmp_path / "my_conf"), "task=my_reviews", "method=manual", "setting.k=2",
               "model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm", "logger=none",
               "run.progress=false", f"run.root={tmp_path / 'runs'}")
    assert done.returncode == 0, done.stderr
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert results["task"] == "my_reviews" and results["n_test"] == len(REVIEWS)


def test_your_task_joins_a_multitask_mixture_by_name(tmp_path, mirror, tiny_models):
    own_task(tmp_path / "my_conf", "tsv")
    done = cli("--config-dir", str(tmp_path / "my_conf"), "setting=multitask", "setting.tasks=[sst2,my_reviews]",
               "setting.k=2", "method=manual", "model=local", f"model.path={tiny_models['masked_lm']}",
               "model.family=masked_lm", "logger=none", "run.progress=false", f"data.mirror={mirror}",
               f"run.root={tmp_path / 'runs'}")
    assert done.returncode == 0, done.stderr
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert set(results["tasks"]) == {"sst2", "my_reviews"}
