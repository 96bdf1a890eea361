"""The launcher: ``python -m consumer run``. PID 1 of the container.

1. builds and validates the settings (a bad value stops here, naming the variable);
2. verifies the KCL jars against the pinned SHA-256 list;
3. prepares the model once per pod (resolve MODEL_URI with MLflow, download, write the lean artifact that the
   shard processes load without importing MLflow);
4. renders the daemon's properties from properties/consumer.properties and the settings;
5. starts the MultiLangDaemon in its own process group, forwards SIGTERM/SIGINT to it, and exits with its status
   (0 when it stopped because we asked it to).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType

from consumer.errors import DaemonSetupError
from consumer.kcl import (
    PROPERTIES_TEMPLATE,
    daemon_command,
    jar_dir,
    properties_overrides,
    render_properties,
    verify_jars,
)
from consumer.logs import get_logger
from consumer.settings import Settings

__all__ = ["prepare_daemon", "run"]

#: Extra seconds the daemon gets after its own shutdown grace before the launcher kills it.
KILL_MARGIN_SECONDS = 15.0


def prepare_daemon(settings: Settings, *, template: Path = PROPERTIES_TEMPLATE) -> tuple[list[str], dict[str, str]]:
    """Everything before the daemon starts; returns its command and environment."""
    log = get_logger()
    if shutil.which(settings.java_bin) is None:
        raise DaemonSetupError(f"JAVA_BIN={settings.java_bin!r} is not an executable on PATH (a JRE 17+ is needed)")
    verified = verify_jars(jar_dir())
    log.info("kcl_jars_verified", jars=verified, directory=str(jar_dir()))

    from consumer.model_store import prepare  # imports MLflow: the launcher pays for it once per pod

    started = time.perf_counter()
    prepared = prepare(settings.model_uri, settings.model_cache_dir)
    log.info(
        "model_prepared",
        model_uri=settings.model_uri,
        path=str(prepared),
        seconds=round(time.perf_counter() - started, 2),
    )

    settings.consumer_work_dir.mkdir(parents=True, exist_ok=True)
    properties = settings.consumer_work_dir / "consumer.properties"
    properties.write_text(render_properties(template.read_text(), properties_overrides(settings)))
    log.info("properties_rendered", path=str(properties))

    env = dict(os.environ)
    env["PREPARED_MODEL_DIR"] = str(prepared)
    return daemon_command(settings, properties), env


def _grace_seconds(properties_text: str) -> float:
    for line in properties_text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "shutdownGraceMillis" and value.strip().isdigit():
            return int(value.strip()) / 1000
    return 0.0


def run(settings: Settings) -> int:
    """Start the daemon and supervise it; return the exit status for the process."""
    log = get_logger()
    command, env = prepare_daemon(settings)
    grace = _grace_seconds((settings.consumer_work_dir / "consumer.properties").read_text())
    daemon = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    log.info("daemon_started", pid=daemon.pid, worker_id=settings.kcl_worker_id, stream=settings.input_stream_name)

    stop_requested_at: list[float] = []  # monotonic time of the first stop signal

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not stop_requested_at:
            log.info("stop_requested", signal=signal.Signals(signum).name, grace_seconds=grace)
            # The daemon's shutdown hook drains: shutdownRequested reaches every processor, which checkpoints.
            daemon.send_signal(signal.SIGTERM)
            stop_requested_at.append(time.monotonic())

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = _supervise(daemon, stop_requested_at, deadline_after_stop=grace + KILL_MARGIN_SECONDS)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    if stop_requested_at and status in (0, 128 + signal.SIGTERM, -signal.SIGTERM):
        log.info("daemon_stopped", status=status)
        return 0
    if status:
        log.error("daemon_exited", status=status)
    else:
        log.info("daemon_exited", status=status)
    return status if status >= 0 else 128 - status


def _supervise(daemon: subprocess.Popen[bytes], stop_requested_at: list[float], deadline_after_stop: float) -> int:
    """Wait for the daemon; kill its process group if it outlives its shutdown grace."""
    while True:
        try:
            return daemon.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if stop_requested_at and time.monotonic() - stop_requested_at[0] > deadline_after_stop:
            get_logger().error("daemon_kill", reason="did not stop within the shutdown grace")
            os.killpg(daemon.pid, signal.SIGKILL)
