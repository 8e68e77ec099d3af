"""Bad input is refused by name with the fix, before anything heavy runs; nothing runs that should not."""

from __future__ import annotations


import pytest
import yaml

from prompt_bench import experiment
from prompt_bench.config_values import flag, whole_number
from prompt_bench.errors import ConfigError, ModelError
from prompt_bench.models import ModelSpec
from prompt_bench.models.loading import load_pretrained
from prompt_bench.recycling.source import read_source, source_model_spec

from test_experiment import make


@pytest.mark.parametrize("seed", ["1.5", "-3", "abc"])
def test_a_seed_that_is_not_a_whole_number_is_refused_by_name_not_rounded(mirror, seed):
    with pytest.raises(ConfigError, match=r"^seed="):
        experiment.plan(make(mirror, "method=manual", f"seed={seed}"))


@pytest.mark.parametrize("spelling, expected", [("off", False), ("no", False), ("false", False), ("0", False),
                                                ("on", True), ("yes", True), ("true", True)])
def test_yes_no_values_mean_what_they_say(spelling, expected):
    assert flag("compute.bf16", spelling) is expected


def test_a_yes_no_value_that_is_neither_is_refused_with_the_fix(mirror):
    with pytest.raises(ConfigError, match=r"compute.bf16=maybe is not a yes/no value: use compute.bf16=true"):
        experiment.plan(make(mirror, "method=manual", "compute.bf16=maybe"))
    assert whole_number("method.budget", "720") == 720
    with pytest.raises(ConfigError, match="method.budget=abc is not a whole number"):
        whole_number("method.budget", "abc")


def test_a_foreign_run_folder_cannot_turn_on_remote_code(mirror, tiny_models, tmp_path):
    folder = tmp_path / "foreign"
    folder.mkdir()
    experiment.run(make(mirror, "method=prompt_tuning", "task=cb", "model=local", f"model.path={tiny_models['masked_lm']}",
                        "model.family=masked_lm", "method.n_prompt_tokens=2", "method.max_steps=1",
                        "method.eval_every=1", "method.batch_size=4", "setting.k=4"), folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["model"]["trust_remote_code"] = True  # what a malicious or careless folder could say
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    spec = source_model_spec(read_source(folder / "prompt.safetensors"))
    assert spec.location == str(tiny_models["masked_lm"]) and spec.trust_remote_code is False


def test_pickled_weights_are_loaded_only_when_the_user_allows_them(tiny_models, tmp_path):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = tmp_path / "pickled"
    model = AutoModelForMaskedLM.from_pretrained(tiny_models["masked_lm"])
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_models["masked_lm"]).save_pretrained(folder)
    (folder / "model.safetensors").unlink()  # the weights only as a pickle, as older checkpoints ship them
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    spec = {"name": "pickled", "family": "masked_lm", "path": str(folder)}
    with pytest.raises(ModelError, match="model.allow_pickle=true"):
        load_pretrained(ModelSpec.from_config(spec), torch.device("cpu"), torch.float32)
    model, _ = load_pretrained(ModelSpec.from_config({**spec, "allow_pickle": True}), torch.device("cpu"), torch.float32)
    assert model is not None


def test_a_method_whose_dependency_is_missing_names_the_package_not_an_unknown_method(monkeypatch):
    import importlib

    real = importlib.import_module

    def import_module(name, package=None):
        if name == "prompt_bench.methods.needs_more":  # the method's module exists; what it imports does not
            raise ModuleNotFoundError("No module named 'not_installed_dependency'", name="not_installed_dependency")
        return real(name, package)

    monkeypatch.setattr(experiment.importlib, "import_module", import_module)
    with pytest.raises(ConfigError, match="method=needs_more needs the package 'not_installed_dependency'"):
        experiment.method_class("needs_more")
    with pytest.raises(ConfigError, match="unknown method 'no_such_method'"):
        experiment.method_class("no_such_method")
