"""Fixtures for the container tier: the project's podman (scripts/container_setup.sh), the image built from the real
Dockerfile, and a model registered in a local MLflow store, which the container reads as a deployment reads a
registry: over HTTP from an MLflow tracking server on 127.0.0.1 (the image has mlflow-skinny, without MLflow's SQL
store), the artifacts through a read-only mount of the store at the same path.

The tier needs root and podman, so it runs on its own: ``make container-test`` (scripts/container_test.sh) prepares
podman, then runs ``pytest -m container``; ``make test`` leaves the tier out. Without podman set up its tests are
skipped with the reason (a failure under ``CI=true``).

Figures (build time, image size, memory per process, durations) are collected in :data:`FIGURES` and printed at
the end of the session, and the same in :data:`REPORT`, written to ``.local/container/figures.json`` (the
``CONTAINER_FIGURES`` variable names another file) when the session measured the image and the running pod:
``make container-docs`` renders docs/container.md from it, each goal beside its figure. Nothing asserts on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from consumer.tools.bench.config import machine_facts
from consumer.tools.paths import LOCAL_DIR
from tests.support.models import ModelStore, RegisteredModel, train_and_register
from tests.support.requirements import require_file, require_tool
from tests.support.tracking import tracking_server

REPO = Path(__file__).resolve().parents[2]
PODMAN_ENV_FILE = REPO / ".cache" / "container" / "env"
IMAGE = "localhost/ride-duration-consumer:test"
#: The stand-in for the Dockerfile's base image that scripts/container_setup.sh makes.
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
#: Where a TLS-intercepting proxy's CA bundle sits on this kind of machine; passed to `podman build` as a secret.
CA_BUNDLE_CANDIDATES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")

FIGURES: dict[str, str] = {}
#: The same figures as numbers, for docs/container.md (consumer/tools/containerdocs.py reads this shape).
REPORT: dict[str, Any] = {"machine": machine_facts()}
#: What a report needs to be written: the image's figures and the running pod's.
REPORT_PARTS = ("image", "pod")


def report_path() -> Path:
    return Path(os.environ.get("CONTAINER_FIGURES") or LOCAL_DIR / "container" / "figures.json")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not all(part in REPORT for part in REPORT_PARTS):
        return
    REPORT["machine"]["load_after"] = list(os.getloadavg())
    if "CONTAINER_SETUP_SECONDS" in os.environ:
        REPORT["setup_seconds"] = int(os.environ["CONTAINER_SETUP_SECONDS"])
    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(REPORT, indent=2) + "\n")
    FIGURES["report (make container-docs renders it)"] = str(path)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "CONTAINER_SETUP_SECONDS" in os.environ:
        FIGURES["podman + stand-in base setup"] = f"{os.environ['CONTAINER_SETUP_SECONDS']} s"
    if FIGURES:
        terminalreporter.section("container figures (measured, not asserted)")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name:<44} {value}")


@dataclass(frozen=True)
class Podman:
    """The podman command with the project's private configuration (containers.conf, storage.conf, TMPDIR)."""

    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            command = " ".join(args[:3])
            raise AssertionError(f"podman {command} ... exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result


def _podman_env(env_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    for line in env_file.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip('"')
    return env


@pytest.fixture(scope="session")
def podman() -> Podman:
    hint = "run `make container-test` (as root: scripts/container_setup.sh sets podman up)"
    require_tool("podman", hint)
    require_file(PODMAN_ENV_FILE, hint)
    return Podman(_podman_env(PODMAN_ENV_FILE))


def build_args(tag: str, ca_bundles: Sequence[str] = CA_BUNDLE_CANDIDATES) -> list[str]:
    """`podman build` of the repository's Dockerfile, offline for the base image (the stand-in), with the
    machine's CA bundle as a build secret when there is one (pip reaches PyPI through it; never in a layer)."""
    args = ["build", "--pull=never", "--network=host", "--format=docker", "--tag", tag, "--file", "Dockerfile"]
    bundle = os.environ.get("PIP_CERT") or next((path for path in ca_bundles if Path(path).is_file()), None)
    if bundle:
        args += ["--secret", f"id=pip_cert,src={bundle}"]
    return [*args, str(REPO)]


@pytest.fixture(scope="session")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image built from the repository's Dockerfile (layers cached between runs on one machine)."""
    log = tmp_path_factory.mktemp("build") / "podman-build.log"
    started = time.monotonic()
    result = podman(*build_args(IMAGE), check=False, timeout=1200)
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        pytest.fail(f"podman build failed ({result.returncode}); log {log}:\n{result.stderr[-4000:]}", pytrace=False)
    build_seconds = time.monotonic() - started
    FIGURES["image build (podman, this run's cache)"] = f"{build_seconds:.0f} s"
    size = image_size(podman, IMAGE)
    base = image_size(podman, BASE_IMAGE)
    FIGURES["image size (on the stand-in base)"] = f"{size / 1e6:.0f} MB (the base: {base / 1e6:.0f} MB)"
    REPORT["image"] = {
        "size_mb": round(size / 1e6),
        "base": BASE_IMAGE,
        "base_size_mb": round(base / 1e6),
        "build_seconds": round(build_seconds),
        "parts_mb": image_parts(podman, IMAGE),
        "base_parts_mb": folder_sizes(podman, BASE_IMAGE, BASE_EXTRAS),
    }
    return IMAGE


def image_size(podman: Podman, image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


#: Where the image's own size goes: folders whose size the report shows, and how many of the largest Python
#: packages it lists.
IMAGE_FOLDERS = ("/opt/venv/lib/python3.11/site-packages", "/opt/venv/share/kcl-jre", "/opt/venv/share/kcl-jars")
LARGEST_PACKAGES = 12


#: The folders Debian's slim configuration keeps nearly empty (apt's caches, documentation, manual pages, locales),
#: measured in the stand-in base to show it is configured as the upstream one is (scripts/container_setup.sh).
BASE_EXTRAS = ("/var/cache/apt", "/usr/share/doc", "/usr/share/man", "/usr/share/locale")


def image_parts(podman: Podman, image: str) -> dict[str, int]:
    """MB (du, rounded) of IMAGE_FOLDERS and of the largest folders of site-packages, measured inside the image."""
    script = f"du -sm {' '.join(IMAGE_FOLDERS)} && du -sm {IMAGE_FOLDERS[0]}/* | sort -rn | head -{LARGEST_PACKAGES}"
    return _du(podman, image, script)


def folder_sizes(podman: Podman, image: str, folders: tuple[str, ...]) -> dict[str, int]:
    """MB (du, rounded) of each of ``folders`` inside ``image``."""
    return _du(podman, image, f"du -sm {' '.join(folders)}")


def _du(podman: Podman, image: str, script: str) -> dict[str, int]:
    result = podman("run", "--rm", "--network=none", "--entrypoint", "/bin/sh", image, "-c", script)
    parts: dict[str, int] = {}
    for line in result.stdout.splitlines():
        size, path = line.split(None, 1)
        parts.setdefault(path, int(size))
    return parts


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> RegisteredModel:
    """The seed's pipeline on 20,000 real trips (20 trees, to keep the tier fast), registered @production."""
    model = train_and_register(ModelStore.at(tmp_path_factory.mktemp("mlflow")), sample=20_000, n_estimators=20)
    # The container (uid 10001) mounts the store read-only at the same path; let that user read it.
    root = model.store.directory
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))
    return model


@pytest.fixture(scope="session")
def registry_url(model_store: RegisteredModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MLFLOW_TRACKING_URI for the container: ``mlflow server`` over the model store on 127.0.0.1 (the container
    shares the host's network)."""
    with tracking_server(model_store.store, tmp_path_factory.mktemp("tracking-server")) as url:
        yield url
