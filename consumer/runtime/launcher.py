"""The launcher: ``python -m consumer run``. PID 1 of the container.

1. builds and validates the settings (a bad value stops here, naming the variable);
2. verifies the KCL jars in KCL_JAR_DIR against the packaged lock (group:artifact:version and SHA-256);
3. prepares the model once per pod, in a short-lived child process (consumer/runtime/preparation.py: resolve
   MODEL_URI with MLflow, download, write the lean artifact that the shard processes load without importing
   MLflow), so that the launcher itself never imports MLflow or scikit-learn, and publishes it in the work
   directory's pointer (consumer/model/current.py), which PREPARED_MODEL_DIR names; when MODEL_URI names an
   alias, it then follows the alias (consumer/runtime/modelwatch.py) and publishes each new version there;
4. renders the daemon's properties from the template (KCL_PROPERTIES_TEMPLATE) and the settings;
5. starts the fork server and the MultiLangDaemon, and supervises the daemon (consumer/runtime/supervision.py):
   SIGTERM/SIGINT are taken before any of this starts; it exits 0 only when the daemon stopped because it was
   asked to.

From the start it serves /metrics, /healthz and /readyz on METRICS_PORT (consumer/runtime/health.py), after emptying
PROMETHEUS_MULTIPROC_DIR, which it hands to the daemon (and so to every shard process) in the environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import structlog

from consumer.errors import DaemonSetupError
from consumer.model.current import POINTER_NAME, publish
from consumer.model.prepared import read_metadata, scoring_path
from consumer.runtime.daemon import daemon_command, parse_properties, properties_overrides, render_properties
from consumer.runtime.daemonlog import DaemonOutput
from consumer.runtime.forkclient import SOCKET_VARIABLE
from consumer.runtime.forkserver import ForkServer
from consumer.runtime.forkserver import start as start_fork_server
from consumer.runtime.health import HealthServer, LauncherState
from consumer.runtime.jars import JarLock, read_lock, verify_jars
from consumer.runtime.logs import get_logger
from consumer.runtime.modelwatch import start_watch, watched_alias
from consumer.runtime.preparation import prepare_model
from consumer.runtime.settings import Settings
from consumer.runtime.supervision import (
    KILL_MARGIN_SECONDS,
    StopRequested,
    StopSignals,
    exit_status,
    start_daemon,
    supervise,
)

__all__ = ["check_batch_deadline", "prepare_daemon", "run"]

#: Room between a batch's deadline and the daemon's timeoutInSeconds: a step that began just before the deadline
#: (one PutRecords call: 5 s to connect, 10 s to read; one checkpoint round trip through the daemon) still ends.
DEADLINE_MARGIN_SECONDS = 30.0


def prepare_daemon(
    settings: Settings,
    *,
    state: LauncherState | None = None,
    jar_lock: JarLock | None = None,
    interrupt: Callable[[], None] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Everything before the daemon starts; returns its command and environment. ``state`` learns the model;
    ``jar_lock`` is the packaged lock unless a development tool runs another KCL version; ``interrupt`` is polled
    while the model is prepared (:func:`~consumer.runtime.preparation.prepare_model`)."""
    log = get_logger()
    if shutil.which(settings.java_bin) is None:
        raise DaemonSetupError(
            f"JAVA_BIN={settings.java_bin!r} is not an executable (a Java 17+ runtime is needed: `make setup` links "
            "the daemon's runtime into <environment>/share/kcl-jre, the default)"
        )
    lock = jar_lock or read_lock()
    verified = verify_jars(settings.kcl_jar_dir, lock)
    log.info("kcl_jars_verified", jars=verified, directory=str(settings.kcl_jar_dir), kcl=lock.kcl_version)

    # The properties first: a deadline that does not fit stops start-up before the model is downloaded.
    settings.consumer_work_dir.mkdir(parents=True, exist_ok=True)
    properties = settings.consumer_work_dir / "consumer.properties"
    template = settings.kcl_properties_template
    try:
        text = template.read_text(encoding="utf-8")
    except OSError as exc:
        raise DaemonSetupError(f"KCL_PROPERTIES_TEMPLATE={template}: cannot read it: {exc}") from exc
    rendered = render_properties(text, properties_overrides(settings))
    check_batch_deadline(settings.batch_deadline_seconds, parse_properties(rendered))
    properties.write_text(rendered)
    log.info("properties_rendered", path=str(properties))

    prepared, seconds = prepare_model(settings, interrupt=interrupt)
    metadata = read_metadata(prepared)
    if watched_alias(settings.model_uri) is None or settings.model_refresh_seconds == 0:
        # The version is the pod's for life: on every later launcher line. A followed alias's lines name theirs.
        structlog.contextvars.bind_contextvars(model_version=str(metadata["version"]))
    if state is not None:
        state.model_prepared(
            {
                "name": metadata.get("name") or "",
                "version": str(metadata["version"]),
                "uri": settings.model_uri,
                "model_path": scoring_path(prepared),
            },
            seconds,
        )

    pointer = settings.consumer_work_dir / POINTER_NAME
    publish(pointer, prepared)
    env = dict(os.environ)
    env["PREPARED_MODEL_DIR"] = str(pointer)
    # Set before any shard process starts, so prometheus_client is in multiprocess mode from its first import.
    env["PROMETHEUS_MULTIPROC_DIR"] = str(settings.prometheus_multiproc_dir)
    return daemon_command(settings, properties), env


def check_batch_deadline(deadline_seconds: float, properties: dict[str, str]) -> None:
    """A batch must fail on its own deadline before the daemon's ``timeoutInSeconds`` halts the whole worker: the
    deadline plus :data:`DEADLINE_MARGIN_SECONDS` (the last step, begun just before the deadline) must fit in it.
    No ``timeoutInSeconds`` means the daemon never halts a processor: any deadline fits."""
    timeout = _property_number(properties, "timeoutInSeconds")
    if timeout is not None and deadline_seconds + DEADLINE_MARGIN_SECONDS > timeout:
        raise DaemonSetupError(
            f"BATCH_DEADLINE_SECONDS={deadline_seconds:g} does not leave {DEADLINE_MARGIN_SECONDS:g} s before the"
            f" daemon's timeoutInSeconds={timeout} (KCL_PROPERTIES_TEMPLATE, KCL_EXTRA_PROPERTIES): lower the"
            f" deadline to at most {timeout - DEADLINE_MARGIN_SECONDS:g} or raise timeoutInSeconds"
        )


def _start_fork_server(settings: Settings, env: dict[str, str]) -> ForkServer | None:
    """Start the fork server the record processors hand their shard to (consumer/runtime/forkserver.py) and put its
    socket in ``env``; None (one plain process per shard) when SHARD_FORK_SERVER=false or it cannot start."""
    if not settings.shard_fork_server:
        return None
    log = get_logger()
    try:
        server = start_fork_server(env, settings.consumer_work_dir)
    except (RuntimeError, OSError) as exc:
        log.warning("fork_server_unavailable", error=str(exc), fallback="one Python process per shard")
        return None
    env[SOCKET_VARIABLE] = str(server.socket_path)
    log.info("fork_server_started", pid=server.process.pid, socket=str(server.socket_path))
    return server


def _property_number(properties: dict[str, str], name: str) -> int | None:
    value = properties.get(name, "")
    return int(value) if value.isdigit() else None


def _start_health_server(settings: Settings, state: LauncherState) -> HealthServer:
    try:
        server = HealthServer(state, settings.metrics_host, settings.metrics_port).start()
    except OSError as exc:
        raise DaemonSetupError(
            f"METRICS_PORT={settings.metrics_port}: cannot serve metrics on {settings.metrics_host}: {exc}"
        ) from exc
    get_logger().info("metrics_server_started", host=settings.metrics_host, port=server.port)
    return server


def run(settings: Settings, *, jar_lock: JarLock | None = None) -> int:
    """Start the daemon and supervise it; return the exit status for the process. A stop (SIGTERM, SIGINT) before
    the daemon runs ends start-up where it is, with 0. ``jar_lock``: see :func:`prepare_daemon`."""
    with StopSignals() as stop:
        try:
            state = LauncherState(settings.prometheus_multiproc_dir)
            state.metrics.empty()
            server = _start_health_server(settings, state)
            try:
                return _run(settings, state, stop, jar_lock)
            finally:
                server.stop()
        except StopRequested:
            get_logger().info("stopped_during_start_up", signal=stop.signal_name)
            return 0


def _run(settings: Settings, state: LauncherState, stop: StopSignals, jar_lock: JarLock | None) -> int:
    command, env = prepare_daemon(settings, state=state, jar_lock=jar_lock, interrupt=stop.check)
    fork_server = _start_fork_server(settings, env)
    assert state.model is not None
    watch = start_watch(
        settings,
        serving=state.model["version"],
        pointer=Path(env["PREPARED_MODEL_DIR"]),
        state=state,
        environ=env,
    )
    try:
        return _run_daemon(settings, state, stop, command, env)
    finally:
        if watch is not None:
            watch.stop()
        if fork_server is not None:
            fork_server.stop()  # after the daemon: every record processor, and so every worker, has ended


def _run_daemon(
    settings: Settings, state: LauncherState, stop: StopSignals, command: list[str], env: dict[str, str]
) -> int:
    properties = parse_properties((settings.consumer_work_dir / "consumer.properties").read_text())
    grace = (_property_number(properties, "shutdownGraceMillis") or 0) / 1000
    state.stuck_after_seconds = float(_property_number(properties, "timeoutInSeconds") or 180)
    # The daemon's stderr goes through the launcher: DaemonOutput relays it, notices the initialisation and keeps
    # its last complaints, the cause of an exit nobody asked for.
    with stop.deferred():
        daemon = start_daemon(command, env, stderr=subprocess.PIPE)
        stop.daemon_started(daemon)
    state.daemon_started(daemon)
    assert daemon.stderr is not None
    output = DaemonOutput(daemon.stderr, sys.stderr.buffer, state.daemon_initialized_now).start()
    get_logger().info(
        "daemon_started",
        pid=daemon.pid,
        worker_id=settings.kcl_worker_id,
        stream=settings.input_stream_name,
        model_version=state.model["version"] if state.model is not None else None,  # the version it starts on
    )
    try:
        status = supervise(daemon, stop, deadline_after_stop=grace + KILL_MARGIN_SECONDS)
    finally:
        output.join(timeout=5)
        # A record processor the daemon left behind (e.g. hung in a call when timeoutInSeconds halted the JVM)
        # would outlive it and keep writing; the daemon started them all in its own process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(daemon.pid, signal.SIGKILL)
    return exit_status(status, stop, output)
