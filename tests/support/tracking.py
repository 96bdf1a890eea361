"""The registry as a deployment reads it: ``mlflow server`` (the full MLflow of .venv's [tools]) over a
:class:`~tests.support.models.ModelStore`'s sqlite registry, on a free port of 127.0.0.1. The image has
mlflow-skinny, which has no SQL store: it reads a registry over HTTP (or a bucket)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from consumer.tools.localstack import free_port
from tests.support.models import ModelStore

__all__ = ["tracking_server"]


@contextlib.contextmanager
def tracking_server(store: ModelStore, work: Path) -> Iterator[str]:
    """``mlflow server`` over ``store`` on 127.0.0.1; yields its URL (``http://127.0.0.1:PORT``). Logs in ``work``."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "server", "--backend-store-uri", store.tracking_uri, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--no-serve-artifacts"]
    command += ["--default-artifact-root", store.artifact_location]
    url = f"http://127.0.0.1:{port}"
    log = work / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("wb") as output:
        # Its own process group: `mlflow server` runs uvicorn as a child, and both go at the end.
        process = subprocess.Popen(
            command, cwd=work, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a goal
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
