"""The package's declared dependencies are the ones Pipfile installs, by role: pyproject.toml's dependencies are
Pipfile's [packages] (the image's run time) and its ``tools`` extra Pipfile's [tools], bounds included; every
package the shipped code imports is a run-time package, every one the tools import is a run-time or a tools
package; and the lock's sections agree on every version they share (.venv installs them together)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from consumer.tools.paths import REPO_ROOT

#: What the image ships: everything under consumer/ but the tools, and the shard's entry point.
SHIPPED = [
    *(path for path in sorted((REPO_ROOT / "consumer").rglob("*.py")) if "tools" not in path.parts),
    REPO_ROOT / "record_processor.py",
]
TOOLS = sorted((REPO_ROOT / "consumer" / "tools").rglob("*.py"))


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(requirement: str) -> str:
    """``name<spec>`` with the name normalized and the spaces dropped."""
    name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", requirement.replace(" ", "")).groups()  # type: ignore[union-attr]
    return _normalized(name) + spec


def _pipfile_requirements(category: str) -> set[str]:
    pipfile = tomllib.loads((REPO_ROOT / "Pipfile").read_text())
    return {_requirement(name + ("" if spec == "*" else spec)) for name, spec in pipfile[category].items()}


def _third_party_imports(path: Path) -> set[str]:
    """The top-level names ``path`` imports at run time (``if TYPE_CHECKING:`` blocks left out), stdlib and this
    project's own packages excepted."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in names if name not in sys.stdlib_module_names and name not in ("consumer", "tests")}


def _undeclared(files: list[Path], declared: set[str]) -> dict[str, list[str]]:
    """Imported name -> the distributions that provide it, for each name that no declared package provides."""
    providers = packages_distributions()
    found: dict[str, list[str]] = {}
    for path in files:
        for name in _third_party_imports(path):
            distributions = sorted({_normalized(dist) for dist in providers.get(name, [])})
            if not set(distributions) & declared:
                found[f"{name} ({path.relative_to(REPO_ROOT)})"] = distributions
    return found


def _names(requirements: set[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[]", requirement, maxsplit=1)[0] for requirement in requirements}


def test_pyproject_dependencies_are_pipfiles_packages_and_its_tools_extra_pipfiles_tools():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]

    assert {_requirement(r) for r in project["dependencies"]} == _pipfile_requirements("packages")
    assert {_requirement(r) for r in project["optional-dependencies"]["tools"]} == _pipfile_requirements("tools")


def test_every_package_the_shipped_code_imports_is_a_run_time_package():
    """runtime, pipeline, model, serving, the CLI and record_processor.py: the image has [packages] alone."""
    assert _undeclared(SHIPPED, _names(_pipfile_requirements("packages"))) == {}


def test_every_package_the_tools_import_is_a_run_time_or_a_tools_package():
    declared = _names(_pipfile_requirements("packages") | _pipfile_requirements("tools"))
    assert _undeclared(TOOLS, declared) == {}


@pytest.mark.parametrize("package", ["mlflow-skinny", "scikit-learn", "skl2onnx", "onnxruntime", "mlflow"])
def test_the_packages_an_upgrade_could_break_have_an_upper_bound(package):
    requirements = _pipfile_requirements("packages") | _pipfile_requirements("tools")
    (requirement,) = [r for r in requirements if _names({r}) == {package}]
    assert "<" in requirement, requirement


def _locked_requirements():
    spec = importlib.util.spec_from_file_location("locked_requirements", REPO_ROOT / "scripts/locked_requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_pins_one_version_of_each_package_across_its_sections():
    lock = json.loads((REPO_ROOT / "Pipfile.lock").read_text())
    module = _locked_requirements()

    assert sorted(section for section in lock if section != "_meta") == sorted(module.SECTIONS)
    assert module.locked_requirements(lock, list(module.SECTIONS))  # raises on two versions of one package


def test_the_images_section_holds_the_mlflow_registry_client_without_its_server_sql_store_or_pandas():
    default = json.loads((REPO_ROOT / "Pipfile.lock").read_text())["default"]

    assert "mlflow-skinny" in default
    assert not {"mlflow", "pandas", "sqlalchemy", "alembic", "matplotlib", "graphene"} & set(default)


def test_the_package_ships_the_daemon_files_and_the_record_processor():
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["py-modules"] == ["record_processor"]
    assert config["package-data"]["consumer.runtime"] == ["properties/*"]
    link = REPO_ROOT / "consumer" / "runtime" / "properties"
    assert link.is_symlink() and link.resolve() == (REPO_ROOT / "properties").resolve()
