"""Every task runs with the defaults: `prompt-bench method=manual task=<any>` needs no other setting."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from prompt_bench import conf_files, experiment
from prompt_bench.cli import CONF_DIR


@pytest.mark.parametrize("task", conf_files.names("task"))
def test_every_task_runs_method_manual_under_its_default_setting(mirror, tiny_models, tmp_path, task):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        # only the model is swapped (a tiny random one, for time): the setting is whatever the task defaults to
        cfg = compose(config_name="config", overrides=[
            "method=manual", f"task={task}", f"data.mirror={mirror}", "logger=none", "run.progress=false",
            "model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm"])
    results = experiment.run(cfg, tmp_path / "run")
    assert results["n_train"] > 0 and results["n_dev"] > 0 and results["n_test"] > 0
    own = conf_files.task_default_setting(task)
    assert results["setting"] == (own or "few_shot")
    if own:
        assert any(f"task {task}'s own default" in note for note in results["data_notes"])
