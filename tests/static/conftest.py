"""Fixtures for the static checks of what ships: the Dockerfile, the Kubernetes and ECS manifests, the IAM policies.

hadolint and kubernetes-validate come with the dev packages (.venv); checkov, parliament and the CRD models live in
their own venv (``scripts/install_static_tools.sh``, run here on first use, then a no-op while its lock is unchanged).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
STATIC_TOOLS = REPO / ".cache" / "static-tools" / "bin"


@pytest.fixture(scope="session")
def static_tools() -> Path:
    """The bin folder of the static-tools venv (checkov, parliament, its python with the CRD models)."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_static_tools.sh")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/install_static_tools.sh failed:\n{result.stderr[-3000:]}", pytrace=False)
    return STATIC_TOOLS


def checkov(static_tools: Path, framework: str, *target: str) -> dict[str, Any]:
    """checkov's JSON report for ``target`` (``--file F`` or ``--directory D``); offline (--skip-download)."""
    command = [str(static_tools / "checkov"), "--quiet", "--compact", "--skip-download", "--output", "json"]
    result = subprocess.run([*command, "--framework", framework, *target], capture_output=True, text=True, check=False)
    try:
        return json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"checkov gave no JSON report ({result.returncode}):\n{result.stderr[-3000:]}", pytrace=False)


def manifests(folder: Path = K8S) -> list[dict[str, Any]]:
    """Every Kubernetes object in ``folder``'s *.yaml files (not its subfolders), in file order."""
    objects = []
    for path in sorted(folder.glob("*.yaml")):
        objects.extend(document for document in yaml.safe_load_all(path.read_text()) if document)
    return objects


def manifest(kind: str, name: str | None = None, folder: Path = K8S) -> dict[str, Any]:
    found = [obj for obj in manifests(folder) if obj["kind"] == kind and name in (None, obj["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {folder}, found {len(found)}"
    return found[0]


def task_definition() -> dict[str, Any]:
    return json.loads((REPO / "ecs" / "task-definition.json").read_text())


def settings_configmap() -> dict[str, str]:
    return manifest("ConfigMap", "ride-duration-consumer-settings")["data"]
