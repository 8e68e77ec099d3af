"""The wheel ships every package and every config (scripts/check_wheel.sh installs and runs it)."""

from __future__ import annotations

import tomllib

from conftest import ROOT


def test_the_wheel_lists_every_python_package_on_disk_and_conf_as_package_data():
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "prompt_bench").rglob("__init__.py")}
    assert set(settings["packages"]) == on_disk | {"prompt_bench.conf"}
    assert settings["package-dir"] == {"prompt_bench.conf": "conf"}
    assert "**/*.yaml" in settings["package-data"]["prompt_bench.conf"]


def test_the_configs_are_found_in_the_checkout_and_would_be_inside_an_installed_wheel():
    from prompt_bench import conf_files

    assert (conf_files.CONF_DIR / "config.yaml").is_file()
    assert conf_files.CONF_DIR in (ROOT / "conf", ROOT / "prompt_bench" / "conf")
