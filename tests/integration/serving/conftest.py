"""Fixtures of the serving tests (``score`` and ``serve``): the model of the MLflow store (tests/integration/
conftest.py) prepared once in a cache that every command reuses, an environment for those commands, a small
month file, and the web endpoint running as ``python -m consumer serve``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from consumer.tools.paths import REPO_ROOT
from tests.support.models import TRIPS, RegisteredModel
from tests.support.requirements import require_file

#: Rows of the real January 2022 file the tests score (the first rows of its last week).
ROWS = 400


@dataclass(frozen=True)
class ServedModel:
    """The registered model, prepared in ``cache_dir`` (``prepared``), and the environment of a command that
    prepares it again from MODEL_URI (and so reuses that directory)."""

    prepared: Path
    cache_dir: Path
    env: dict[str, str]


def command_env(trained: RegisteredModel, cache_dir: Path) -> dict[str, str]:
    """The environment of `score` or `serve` in a test: this one without any AWS, MLflow, model or serving
    variable, then the store, MODEL_URI and MODEL_CACHE_DIR."""
    prefixes = ("AWS_", "MLFLOW_", "MODEL_", "SERVE_", "PROMETHEUS_", "PREPARED_", "LOG_LEVEL")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env.update(
        MLFLOW_TRACKING_URI=trained.store.tracking_uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        MODEL_URI=f"models:/{trained.result.name}@{trained.result.alias}",
        MODEL_CACHE_DIR=str(cache_dir),
        AWS_EC2_METADATA_DISABLED="true",  # nothing may look for an instance's credentials
    )
    return env


@pytest.fixture(scope="session")
def served_model(trained_skops: RegisteredModel, tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    from consumer.model.prepare import prepare

    cache_dir = tmp_path_factory.mktemp("serving-model-cache")
    env = command_env(trained_skops, cache_dir)
    prepared = prepare(env["MODEL_URI"], cache_dir, tracking_uri=trained_skops.store.tracking_uri)
    return ServedModel(prepared, cache_dir, env)


@pytest.fixture(scope="session")
def month_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ROWS`` real rides of January 2022 under the TLC file name, every column of the original."""
    table = pq.read_table(require_file(TRIPS, "the January 2022 TLC file lives in ../shared/data"))
    path = tmp_path_factory.mktemp("tlc") / TRIPS.name
    pq.write_table(table.slice(table.num_rows - 7_000, ROWS), path)
    return path


def write_rides(path: Path, columns: dict[str, pa.Array]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WebServer:
    """``python -m consumer serve`` on a port of 127.0.0.1."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    metrics_dir: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=60)


def start_web_server(model: ServedModel, work: Path, **settings: str) -> WebServer:
    """Start the endpoint and wait until /readyz answers 200 (a guard of 120 s against a hang, not a goal)."""
    port = free_port()
    env = {
        **model.env,
        "SERVE_HOST": "127.0.0.1",
        "SERVE_PORT": str(port),
        "SERVE_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        **settings,
    }
    log = work / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "serve"], cwd=REPO_ROOT, env=env, stdout=stderr, stderr=stderr
        )
    server = WebServer(process, f"http://127.0.0.1:{port}", log, work / "metrics")
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"`serve` did not become ready:\n{log.read_text()[-4000:]}", pytrace=False)
        time.sleep(0.2)


@pytest.fixture(scope="module")
def web(served_model: ServedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """The endpoint for a test module, with a small body limit (4 KiB) so that a body over it is cheap to send."""
    server = start_web_server(served_model, tmp_path_factory.mktemp("web"), SERVE_MAX_BODY_BYTES="4096")
    try:
        yield server
    finally:
        server.stop()
