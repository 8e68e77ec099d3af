"""conf/experiment/*: the paper presets (`prompt-bench -m experiment=<name>`). Each preset's sweep is expanded
exactly as Hydra's basic sweeper expands it (the preset's hydra.sweeper.params, then the command line), and every
job of the grid is composed and put through the checks a run makes before loading anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from prompt_bench.cli import CONF_DIR
from prompt_bench.experiment import plan

PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
#: config groups a preset may sweep or pick; every value must be a conf/<group>/<value>.yaml
GROUPS = ("method", "model", "task", "setting", "optimizer", "logger")
PAPER_SEEDS = ["13", "21", "42", "87", "100"]


def make(*overrides: str, conf_dir: str = CONF_DIR):
    with initialize_config_dir(config_dir=conf_dir, version_base=None):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def preset_jobs(name: str, *command_line: str, conf_dir: str = CONF_DIR) -> list[list[str]]:
    """The job override lists `prompt-bench -m experiment=<name> <command_line>` launches (BasicSweeper.sweep)."""
    cfg = make(f"experiment={name}", conf_dir=conf_dir)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    overrides = OverridesParser.create().parse_overrides([*params, f"experiment={name}", *command_line])
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def choices(jobs: list[list[str]], key: str) -> list[str]:
    """The values a key takes over the jobs, in sweep order."""
    seen = {}
    for job in jobs:
        for override in job:
            k, _, v = override.partition("=")
            if k == key:
                seen[v] = None
    return list(seen)


def unknown_choices(jobs: list[list[str]], conf_dir: str = CONF_DIR) -> list[str]:
    """`group=value` overrides of the jobs that name no conf/<group>/<value>.yaml."""
    bad = {}
    for job in jobs:
        for override in job:
            key, _, value = override.lstrip("+~").partition("=")
            group = key.split("/")[-1]
            if group in GROUPS and not (Path(conf_dir) / group / f"{value}.yaml").is_file():
                bad[f"{group}={value}"] = None
    return list(bad)


def test_there_is_a_preset_per_paper_table():
    assert {"bbt_paper", "bbtv2_paper", "dp_superglue", "recycling_grid"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_sweeps_only_methods_tasks_and_models_that_exist(name):
    jobs = preset_jobs(name)
    assert len(jobs) > 1
    assert unknown_choices(jobs) == []


def covering(jobs: list[list[str]]) -> list[list[str]]:
    """Jobs in which every value of every swept key appears at least once (the pre-load checks depend on the
    method with the setting and on the task with the model, never on a pair of swept values), seeds aside."""
    picked, seen = [], set()
    for job in jobs:
        new = {o for o in job if not o.startswith("seed=")} - seen
        if new:
            picked.append(job)
            seen |= new
    return picked


@pytest.mark.parametrize("name", PRESETS)
def test_every_method_and_task_of_a_preset_composes_and_passes_the_checks_made_before_loading(name):
    preset = make(f"experiment={name}")
    jobs = covering(preset_jobs(name))
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        for job in jobs:
            cfg = compose(config_name="config", overrides=job)
            the_plan = plan(cfg)
            # the preset's model and setting reach every job unless the sweep itself ranges over them
            if "model" not in preset.hydra.sweeper.params:
                assert cfg.model.name == preset.model.name
            assert cfg.setting == preset.setting
            assert the_plan.task.name == cfg.task.name


def test_bbt_paper_is_the_bbt_table_on_roberta_large_at_the_papers_black_box_settings():
    cfg = make("experiment=bbt_paper")
    assert cfg.model.name == "roberta_large" and cfg.model.id == "FacebookAI/roberta-large"
    assert (cfg.setting.name, cfg.setting.k) == ("few_shot", 16)
    jobs = preset_jobs("bbt_paper")
    methods = choices(jobs, "method")
    assert {"manual", "prompt_tuning", "p_tuning_v2", "fine_tuning", "bbt", "bbtv2"} <= set(methods)
    # BBT's seven tasks less the two the mirror lacks (Yelp polarity, DBPedia)
    assert choices(jobs, "task") == ["sst2", "ag_news", "mrpc", "snli", "rte"]
    assert choices(jobs, "seed") == PAPER_SEEDS
    assert len(jobs) == len(methods) * 5 * 5
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        for method in ("bbt", "bbtv2", "clip_tuning", "gdfo"):
            for task, loss in (("sst2", "ce"), ("rte", "hinge"), ("mrpc", "hinge"), ("snli", "hinge")):
                job = compose(config_name="config", overrides=[f"method={method}", f"task={task}", "experiment=bbt_paper"])
                # bbt.py's defaults: prompt length 50 added onto placeholder words, d 500, popsize 20, 8,000 API
                # calls; the authors' README recommends hinge on the sentence-pair tasks
                assert (job.method.n_prompt_tokens, job.method.intrinsic_dim, job.method.budget) == (50, 500, 8000)
                assert (job.method.loss, job.optimizer.name, job.optimizer.popsize) == (loss, "cma", 20)
                assert (job.method.prompt_mode, job.method.placeholder_start) == ("add", 1000)
                assert list(job.method.dev_candidates) == ["at_call"]
                # metrics.py's label words (bare), bbt.py:199's bias-free LM head, dataloader.py's 512 tokens
                assert (job.model.label_word_prefix, job.model.label_bias, job.task.max_length) == ("", False, 512)
        assert compose(config_name="config", overrides=["method=prompt_tuning", "experiment=bbt_paper"]
                       ).method.n_prompt_tokens == 50


def test_dp_superglue_is_the_superglue_grid_on_t5_large_with_dpts_training_length():
    cfg = make("experiment=dp_superglue")
    assert cfg.model.name == "t5_large_lm" and cfg.model.id == "google/t5-large-lm-adapt"
    assert cfg.setting.name == "full_data"
    jobs = preset_jobs("dp_superglue")
    assert choices(jobs, "method") == ["prompt_tuning", "p_tuning_v2", "dynamic_prompting"]
    assert choices(jobs, "task") == ["boolq", "cb", "superglue_rte", "wic", "multirc"]
    assert len(jobs) == 3 * 5 * 3
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        for method in ("prompt_tuning", "p_tuning_v2", "dynamic_prompting"):
            job = next(j for j in jobs if f"method={method}" in j)
            m = compose(config_name="config", overrides=job).method
            # DPT: batches of 8, an optimizer step per batch: 20,000 "global" steps of 4 batches, eval every 500 of them
            assert (m.name, m.n_prompt_tokens, m.max_steps, m.eval_every, m.batch_size) == (method, 20, 80000, 2000, 8)


def test_dp_superglue_trains_each_method_with_its_reference_recipe():
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        def job(method, task="cb"):
            return compose(config_name="config", overrides=[f"method={method}", f"task={task}", "experiment=dp_superglue"])

        for method in ("prompt_tuning", "dynamic_prompting"):  # DPT's soft-prompt recipe
            cfg = job(method)
            o = cfg.optimizer
            assert (o.name, o.implementation, cfg.method.lr, o.scale_parameter, o.relative_step) == (
                "adafactor", "transformers", 0.3, False, False)
            assert (o.schedule, o.warmup_steps, o.max_grad_norm, cfg.method.model_dropout) == (
                "constant_with_warmup", 500, 1.0, True)
        dp = job("dynamic_prompting").method
        assert (dp.init, dp.temperature.every, dp.dp.pool_selector) == ("uniform", 4, "linear")
        assert job("prompt_tuning").method.init == "vocab"
        ptv2 = job("p_tuning_v2")  # THUDM/P-tuning-v2's head, dropout and Trainer recipe
        assert (ptv2.method.head, ptv2.method.dropout, ptv2.method.model_dropout, ptv2.method.prefix_init_std) == (
            "reference", 0.1, True, 0.02)
        assert (ptv2.optimizer.name, ptv2.method.lr, ptv2.optimizer.schedule, ptv2.optimizer.warmup_steps,
                ptv2.optimizer.max_grad_norm) == ("adamw", 0.01, "linear", 0, 1.0)
        # DPT's templates and lowercase words; CB and MultiRC select on accuracy, as DPT's evaluate() scores them
        for task, words, select in (("cb", ["yes", "no", "maybe"], "accuracy"), ("superglue_rte", ["yes", "no"], None),
                                    ("boolq", ["no", "yes"], None), ("multirc", ["no", "yes"], "accuracy"),
                                    ("copa", ["A", "B"], None), ("wic", ["no", "yes"], None)):
            spec = plan(job("prompt_tuning", task)).task
            assert (spec.style, list(spec.verbalizer), spec.select) == ("dpt", words, select)
            assert spec.template.endswith("{mask}") and spec.causal_template is None
        assert plan(job("prompt_tuning", "cb")).task.template == "hypothesis: {hypothesis}. premise: {premise} {mask}"
        # outside the preset nothing changes: our templates, our optimizer, no dropout
        plain = compose(config_name="config", overrides=["method=dynamic_prompting", "task=cb"])
        assert (plain.task.style, plain.optimizer.name, plain.optimizer.schedule, plain.method.model_dropout,
                plain.method.init) == (None, "adamw", "constant", False, "vocab")


def test_a_command_line_sweep_replaces_the_presets_and_keeps_the_rest():
    jobs = preset_jobs("dp_superglue", "method=prompt_tuning,dynamic_prompting", "optimizer.warmup_steps=10")
    assert choices(jobs, "method") == ["prompt_tuning", "dynamic_prompting"]
    assert len(jobs) == 2 * 5 * 3
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        for job in (jobs[0], jobs[-1]):
            run = compose(config_name="config", overrides=job)
            # the per-method recipe still applies, and a command-line value still wins over it
            assert (run.optimizer.name, run.method.lr, run.optimizer.warmup_steps, run.method.max_steps) == (
                "adafactor", 0.3, 10, 80000)


def test_bbt_paper_trains_its_p_tuning_v2_row_as_the_p_tuning_v2_code_does():
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        ptv2 = compose(config_name="config", overrides=["method=p_tuning_v2", "task=rte", "experiment=bbt_paper"])
        assert (ptv2.method.head, ptv2.method.dropout, ptv2.optimizer.schedule, ptv2.optimizer.max_grad_norm) == (
            "reference", 0.1, "linear", 1.0)
        assert plan(ptv2).encoding.plain_input
        pt = compose(config_name="config", overrides=["method=prompt_tuning", "task=rte", "experiment=bbt_paper"])
        assert (pt.optimizer.schedule, pt.optimizer.max_grad_norm, pt.method.model_dropout) == ("constant", None, False)


def test_recycling_grid_trains_source_prompts_where_recycle_grid_py_looks_for_them():
    cfg = make("experiment=recycling_grid")
    assert (cfg.method.name, cfg.optimizer.name, cfg.method.lr) == ("prompt_tuning", "adafactor", 0.3)
    # T5X's Adafactor as the prompt-tuning gin configs set it: fixed step size, no parameter scaling, decay 1e-5
    assert (cfg.optimizer.implementation, cfg.optimizer.scale_parameter, cfg.method.weight_decay) == (
        "transformers", False, 1e-5)
    assert (cfg.setting.name, cfg.method.max_steps) == ("full_data", 20000)
    # the reference's SST-2 text-to-text input and rank classification of the label names
    spec = plan(cfg).task
    assert (spec.style, spec.template, spec.verbalizer) == ("t5", "sentence: {sentence} {mask}", ("negative", "positive"))
    jobs = preset_jobs("recycling_grid")
    assert choices(jobs, "model") == ["t5_base_lm", "t5_large_lm"]
    assert len(jobs) == 2 * 1 * 3
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        for job in jobs:
            run = compose(config_name="config", overrides=job, return_hydra_config=True)
            sweep_dir = OmegaConf.select(run, "hydra.sweep.dir")
            subdir = OmegaConf.select(run, "hydra.sweep.subdir")
            # the folders the preset's comment hands to scripts/recycle_grid.py
            assert sweep_dir == "outputs/experiments/recycling_grid"
            assert subdir.startswith(f"sst2/prompt_tuning/{run.model.name}/seed")


def test_a_preset_naming_an_unknown_task_is_caught(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "typo.yaml").write_text(
        "# @package _global_\n"
        "hydra:\n  sweeper:\n    params:\n      method: bbt\n      task: sst2,yelp_p\n      seed: 13,21\n"
    )
    jobs = preset_jobs("typo", conf_dir=str(conf))
    assert unknown_choices(jobs, conf_dir=str(conf)) == ["task=yelp_p"]
    bad = next(job for job in jobs if "task=yelp_p" in job)
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        with pytest.raises(HydraException, match="yelp_p"):
            compose(config_name="config", overrides=bad)


def test_bbtv2_paper_runs_the_authors_published_bbtv2_command():
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        job = compose(config_name="config", overrides=["method=bbtv2", "task=ag_news", "experiment=bbtv2_paper"])
    # README "Using BBTv2": --sigma 0.2 --alpha 0.2 --popsize 20 --bound 0 --budget 8000 --loss_type ce
    assert (job.method.sigma, job.method.alpha, job.optimizer.popsize, job.optimizer.bound) == (0.2, 0.2, 20, None)
    assert (job.method.budget, job.method.loss, job.model.name) == (8000, "ce", "roberta_large")
    assert choices(preset_jobs("bbtv2_paper"), "method") == ["bbt", "bbtv2"]
