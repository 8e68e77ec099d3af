"""Config composition and the checks that run before anything heavy is loaded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from prompt_bench.cli import CONF_DIR, config_hash  # noqa: F401 - registers the pb_hash resolver
from prompt_bench.errors import ConfigError, DataError, ModelError
from prompt_bench.experiment import plan


def make(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_every_config_group_is_composed_by_one_defaults_list():
    cfg = make()
    for group in ("method", "model", "task", "optimizer", "setting", "logger"):
        assert group in cfg, group
    assert cfg.model.name == "minilm" and cfg.setting.name == "few_shot"


def test_a_method_picks_its_optimizer_and_the_command_line_still_wins():
    assert make("method=bbt").optimizer.name == "cma"
    assert make("method=prompt_tuning").optimizer.name == "adamw"
    assert make("method=prompt_tuning", "optimizer=adafactor").optimizer.name == "adafactor"


def test_bbt_paper_defaults_are_one_override_away_from_the_cpu_demo():
    demo = make("method=bbt")
    paper = make("method=bbt", "model=roberta_large")
    assert (paper.method.intrinsic_dim, paper.method.n_prompt_tokens, paper.method.budget) == (500, 50, 8000)
    assert (paper.optimizer.popsize, paper.method.sigma) == (20, 1.0)
    assert demo.method.budget < 8000
    assert make("method=bbt", "method.budget=8000").method.budget == 8000


def test_a_black_box_method_with_a_gradient_optimizer_fails_naming_the_fix():
    with pytest.raises(ConfigError, match="optimizer=cma"):
        plan(make("method=bbt", "optimizer=adamw"))


def test_a_gradient_method_with_a_derivative_free_optimizer_fails_naming_the_fix():
    with pytest.raises(ConfigError, match="optimizer=adamw"):
        plan(make("method=prompt_tuning", "optimizer=cma"))


def test_a_task_a_causal_lm_cannot_express_fails_before_loading_anything():
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="causal_template"):
        plan(make("task=mrpc", "model=smollm2", "task.causal_template=null"))
    assert time.perf_counter() - started < 5


def test_tasks_with_a_causal_template_are_accepted_for_causal_models():
    assert plan(make("task=rte", "model=smollm2", "method=bbt")).task.name == "rte"


def test_a_non_positive_budget_is_refused():
    with pytest.raises(ConfigError, match="budget"):
        plan(make("method=bbt", "method.budget=0"))


def test_a_missing_model_path_is_refused_before_loading(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        plan(make(f"model.path={tmp_path / 'missing'}"))


def test_the_run_folder_is_named_by_a_hash_of_what_the_run_computes():
    base = make("method=bbt")
    assert config_hash(_root_=base) == config_hash(_root_=make("method=bbt", "logger=none", "run.progress=false"))
    assert config_hash(_root_=base) != config_hash(_root_=make("method=bbt", "seed=13"))
    assert config_hash(_root_=base) != config_hash(_root_=make("method=bbt", "method.loss=hinge"))


def test_a_missing_data_mirror_is_a_data_error(tmp_path):
    from prompt_bench.experiment import load_data

    cfg = make(f"data.mirror={tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match="data.mirror"):
        load_data(cfg, plan(cfg).task)


def test_k_larger_than_a_class_has_names_the_task_and_the_fix(mirror):
    from prompt_bench.experiment import load_data

    cfg = make("task=cb", "setting=few_shot", f"data.mirror={mirror}")
    with pytest.raises(DataError, match="task cb: .*setting.k"):
        load_data(cfg, plan(cfg).task)


def test_full_data_knobs_must_be_positive_or_null():
    with pytest.raises(ConfigError, match="setting.patience=0 must be at least 1"):
        plan(make("method=prompt_tuning", "setting=full_data", "setting.patience=0"))


# -- every effective value visible, no group rewriting another's keys ----------------------------------------------
def _top_keys(path: Path) -> set[str]:
    return set(OmegaConf.load(path).keys()) - {"defaults"}


def test_a_method_file_sets_only_method_keys_and_the_scale_files_only_sizes():
    """A method may choose its optimizer (in its defaults list) but never rewrites the optimizer's keys, so
    `optimizer=adafactor` runs Adafactor as conf/optimizer/adafactor.yaml says, at the method's `method.lr`."""
    conf = Path(CONF_DIR)
    for path in sorted((conf / "method").glob("*.yaml")) + sorted((conf / "scale_method").glob("*.yaml")):
        assert _top_keys(path) <= {"method"}, path.name
    for path in sorted((conf / "optimizer").glob("*.yaml")):
        assert not {"lr", "weight_decay", "sigma"} & _top_keys(path), f"{path.name}: the rates are the method's"


def test_the_learning_rate_is_the_methods_whichever_optimizer_runs():
    for optimizer in ("adamw", "adafactor"):
        cfg = make("method=prompt_tuning", f"optimizer={optimizer}")
        assert (cfg.optimizer.name, cfg.method.lr) == (optimizer, 0.01)
        assert "lr" not in cfg.optimizer
    assert make("method=fine_tuning").method.lr == 1e-5


def test_cpu_demo_sizes_follow_the_scale_the_model_file_chooses_not_the_model_choice_name():
    demo = make("method=bbt")  # the packaged MiniLM chooses scale=cpu_demo in conf/model/minilm.yaml
    assert (demo.scale, demo.method.budget, demo.method.n_prompt_tokens) == ("cpu_demo", 1000, 10)
    # the same MiniLM loaded as a local folder is a model like any other: paper sizes, and the config says so
    local = make("method=bbt", "model=local", "model.path=/some/minilm")
    assert (local.scale, local.method.budget, local.method.n_prompt_tokens) == ("paper", 8000, 50)
    # either way is one word
    assert make("method=bbt", "model=local", "model.path=/some/minilm", "scale=cpu_demo").method.budget == 1000
    assert make("method=bbt", "scale=paper").method.budget == 8000
    # methods without demo sizes run their paper sizes at either scale
    assert make("method=prompt_tuning").method.n_prompt_tokens == make("method=prompt_tuning", "scale=paper").method.n_prompt_tokens
