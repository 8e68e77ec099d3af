"""`prompt-bench-predict <run> <inputs.jsonl>` labels new texts exactly as the run scored its test set."""

from __future__ import annotations

import json

import pytest

from prompt_bench import experiment, predictions
from prompt_bench.predict import main
from prompt_bench.tasks import loading
from test_experiment import SMALL_BBT, make

TINY = ["setting.k=4"]


def tiny(tiny_models):
    return ["model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm"]


@pytest.mark.parametrize("method", [
    SMALL_BBT,  # an additive prompt on placeholder words
    ["method=prompt_tuning", "method.n_prompt_tokens=3", "method.max_steps=2", "method.eval_every=1", "method.batch_size=4"],
    ["method=p_tuning_v2", "method.n_prompt_tokens=3", "method.max_steps=2", "method.eval_every=1", "method.batch_size=4"],
    ["method=manual"],
    ["method=clip_tuning", *SMALL_BBT[1:], "method.inference=ensemble"],  # the run's own thinned networks
    ["method=bbtv2", "method.budget=40", "method.intrinsic_dim=8", "method.n_prompt_tokens=4", "optimizer.popsize=4",
     "method.eval_every=20"],
    ["method=dynamic_prompting", "method.n_prompt_tokens=3", "method.pool_size=2", "method.max_steps=2",
     "method.eval_every=1", "method.batch_size=4"],
], ids=["bbt", "prompt_tuning", "p_tuning_v2", "manual", "clip_tuning", "bbtv2", "dynamic_prompting"])
def test_predictions_for_the_test_inputs_are_the_runs_own_test_predictions(mirror, tiny_models, tmp_path, method, capsys):
    cfg = make(mirror, *method, *tiny(tiny_models))
    run = tmp_path / "run"
    experiment.run(cfg, run)
    task = experiment.plan(cfg).task
    examples = loading.load_split(task, "test", mirror).examples[:40]
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps(dict(ex.fields)) + "\n" for ex in examples))
    main([str(run), str(inputs), "--out", str(tmp_path / "out.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    saved = predictions.load(run)["test"][task.name].preds[:40]
    assert [row["prediction"] for row in rows] == [task.labels[i] for i in saved]
    assert all(abs(sum(row["probabilities"].values()) - 1) < 1e-4 for row in rows)


def test_bad_inputs_and_folders_get_one_line(mirror, tiny_models, tmp_path, capsys):
    run = tmp_path / "run"
    experiment.run(make(mirror, "method=manual", *tiny(tiny_models)), run)
    (tmp_path / "bad.jsonl").write_text('{"text": "no sentence field"}\n')
    for args, says in [([str(run), str(tmp_path / "bad.jsonl")], "bad.jsonl:1: no field sentence"),
                       ([str(tmp_path), str(tmp_path / "bad.jsonl")], "is not a finished run folder")]:
        with pytest.raises(SystemExit) as status:
            main(args)
        assert status.value.code == 2
        assert says in capsys.readouterr().err
