"""The pod's health and the one HTTP server that reports it, on METRICS_PORT, run by the launcher:

- ``/metrics``: Prometheus text (or OpenMetrics) from a fresh registry per request: every shard process's
  multiprocess files plus the launcher's own metrics (:mod:`consumer.runtime.metrics`);
- ``/healthz`` (liveness): 200 while the launcher answers, the daemon has not exited and no record processor has
  been inside one call from the daemon for longer than the daemon's ``timeoutInSeconds``; 503 otherwise;
- ``/readyz`` (readiness): 200 once the model is prepared and the daemon has initialised (its scheduler logged
  "Initialization complete": consumer/runtime/daemonlog.py says why that line), while the daemon runs; 503 before
  and after. A worker that holds no lease (more pods than shards) is still ready.

Both health answers are JSON: ``{"status": "ok"|"fail", "checks": [...]}`` with one sentence per check. Every
read of the shard processes' files goes through the state's :class:`~consumer.runtime.metricsfolder.MetricsFolder`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app

from consumer.runtime.metrics import PreparedModel, busy_processors, scrape_registry
from consumer.runtime.metricsfolder import MetricsFolder

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["Check", "HealthServer", "LauncherState", "liveness", "readiness"]


@dataclass(frozen=True)
class Check:
    """The answer of one endpoint: healthy or not, and why, in sentences."""

    ok: bool
    reasons: list[str]

    def body(self) -> bytes:
        return orjson.dumps({"status": "ok" if self.ok else "fail", "checks": self.reasons})


class Polled(Protocol):
    """The daemon as the state sees it: a subprocess.Popen, or anything else with ``poll()``."""

    def poll(self) -> int | None: ...


class LauncherState:
    """What the launcher knows about its pod. Written by the launcher's main thread and the daemon-output relay,
    read by the HTTP server's threads (single attribute writes; nothing needs a lock). ``metrics``: the shard
    processes' folder (``multiproc_dir`` compacted, unless another is given)."""

    def __init__(
        self,
        multiproc_dir: Path,
        *,
        stuck_after_seconds: float = 180.0,
        clock: Callable[[], float] = time.time,
        metrics: MetricsFolder | None = None,
    ) -> None:
        self.metrics = metrics or MetricsFolder(multiproc_dir)
        self.stuck_after_seconds = stuck_after_seconds
        self.clock = clock
        self.model: PreparedModel | None = None
        self.model_load_seconds: float | None = None
        self.daemon_started_at: float | None = None
        self.daemon_initialized = False
        self._daemon: Polled | None = None
        self.model_published_at: float | None = None
        self.model_refusals: dict[str, int] = {}
        self.model_refresh_failures = 0
        self.alias_refused_version: str | None = None

    def model_prepared(self, info: PreparedModel, seconds: float) -> None:
        self.model = info
        self.model_load_seconds = seconds
        self.model_published_at = self.clock()

    def model_published(self, info: PreparedModel, seconds: float) -> None:
        """The model watch (consumer/runtime/modelwatch.py) has published another version."""
        self.model_prepared(info, seconds)

    def model_refused(self, version: str) -> None:
        self.model_refusals = {**self.model_refusals, version: self.model_refusals.get(version, 0) + 1}

    def model_refresh_failed(self) -> None:
        self.model_refresh_failures += 1

    def alias_refused(self, version: str | None) -> None:
        """The alias points at ``version``, which this pod refused (None: at a version it serves or will)."""
        self.alias_refused_version = version

    def daemon_started(self, process: Polled) -> None:
        """``process``: the daemon's subprocess.Popen (anything with ``poll()``)."""
        self._daemon = process
        self.daemon_started_at = self.clock()

    def daemon_initialized_now(self) -> None:
        """The daemon has said it initialised (consumer/runtime/daemonlog.py)."""
        self.daemon_initialized = True

    def daemon_running(self) -> bool:
        return self._daemon is not None and self._daemon.poll() is None

    def ready(self) -> bool:
        return readiness(self).ok


def liveness(state: LauncherState) -> Check:
    """Alive unless the daemon has exited or a processor is stuck inside one call."""
    problems: list[str] = []
    if state.daemon_started_at is not None and not state.daemon_running():
        problems.append("the daemon has exited")
    now = state.clock()
    for shard_id, since in sorted(busy_processors(state.metrics).items()):
        if now - since > state.stuck_after_seconds:
            problems.append(
                f"the processor of {shard_id} has been inside one call for {now - since:.0f} s "
                f"(limit {state.stuck_after_seconds:.0f} s, the daemon's timeoutInSeconds)"
            )
    if problems:
        return Check(False, problems)
    if state.daemon_started_at is None:
        return Check(True, ["the launcher is starting (the daemon is not started yet)"])
    return Check(True, ["the launcher and the daemon run", "no processor is stuck inside a call"])


def readiness(state: LauncherState) -> Check:
    """Ready when the model is prepared and the daemon runs and has initialised."""
    problems: list[str] = []
    if state.model is None:
        problems.append("the model is not prepared yet")
    if state.daemon_started_at is None:
        problems.append("the daemon is not started yet")
    elif not state.daemon_running():
        problems.append("the daemon has exited")
    elif not state.daemon_initialized:
        problems.append("the daemon is initialising (lease table, shard sync)")
    if problems:
        return Check(False, problems)
    assert state.model is not None
    return Check(True, [f"model version {state.model['version']} prepared", "the daemon has initialised"])


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds would drown the logs."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one port, served from a daemon thread."""

    def __init__(self, state: LauncherState, host: str, port: int) -> None:
        self._state = state
        self._server = make_server(host, port, self._app, _ThreadingServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            metrics: WSGIApplication = make_wsgi_app(scrape_registry(self._state.metrics, self._state))
            return metrics(environ, start_response)
        if path == "/healthz":
            check = liveness(self._state)
        elif path == "/readyz":
            check = readiness(self._state)
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics, /healthz or /readyz\n"]
        status = "200 OK" if check.ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [check.body()]
