"""The package's declared dependencies are the ones Pipfile installs: pyproject.toml says what the code imports,
Pipfile (and its lock) pins the versions every environment gets."""

from __future__ import annotations

import re
import tomllib

from consumer.tools.paths import REPO_ROOT


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_dependencies_are_pipfiles_default_packages():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pipfile = tomllib.loads((REPO_ROOT / "Pipfile").read_text())
    declared = {_name(requirement) for requirement in project["dependencies"]}
    installed = {name.lower().replace("_", "-") for name in pipfile["packages"]}
    assert declared == installed, {"only in pyproject": declared - installed, "only in Pipfile": installed - declared}


def test_the_package_ships_the_daemon_files_and_the_record_processor():
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["py-modules"] == ["record_processor"]
    assert config["package-data"]["consumer.runtime"] == ["properties/*"]
    link = REPO_ROOT / "consumer" / "runtime" / "properties"
    assert link.is_symlink() and link.resolve() == (REPO_ROOT / "properties").resolve()
