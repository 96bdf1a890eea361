"""``python -m consumer serve``: the web endpoint (:mod:`consumer.serving.web`) behind gunicorn, on SERVE_PORT.

:func:`serve` prepares the model (MLflow: resolve, download, trust rules, compile) and then *replaces itself*
(``exec``) with this module's :func:`main`, so the long-lived processes never hold MLflow: the gunicorn master
loads the prepared model (onnxruntime and numpy on the fast path), builds the application, freezes the garbage
collector and forks ``SERVE_WORKERS`` workers, which share the loaded model copy-on-write. Each worker runs
``SERVE_THREADS`` threads (gthread: keep-alive connections, a slow client holds one thread, not a worker).
Metrics are in prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set before the interpreter
starts, emptied before the metrics are made, and a worker that exits has its live files removed.

gunicorn's own log lines go through the JSON logs on stderr like every other line.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from consumer.errors import SettingsError
from consumer.runtime.logs import configure_logging, get_logger
from consumer.runtime.metricsfolder import MetricsFolder
from consumer.runtime.preparation import prepare_model
from consumer.runtime.settings import ServingSettings, load_serving_settings

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["JsonLogger", "WebServer", "main", "serve"]

#: The module ``serve`` hands over to.
SERVER_MODULE = "consumer.serving.server"


def serve(settings: ServingSettings) -> NoReturn:
    """Prepare the model, then become the web server (this process, with the prepared directory and the metrics
    folder in its environment)."""
    prepared = prepare_model(settings).path
    env = dict(os.environ)
    env["PREPARED_MODEL_DIR"] = str(prepared)
    # Set before the server's interpreter starts, so prometheus_client is in multiprocess mode from its first import.
    env["PROMETHEUS_MULTIPROC_DIR"] = str(settings.prometheus_multiproc_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", SERVER_MODULE], env)


class JsonLogger(Logger):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's logger with its handlers dropped: its lines propagate to the root logger, which writes them as
    JSON on stderr (:func:`consumer.runtime.logs.configure_logging`). No access log: the metrics count requests."""

    def setup(self, cfg: Any) -> None:
        self.cfg = cfg
        self.loglevel = self.LOG_LEVELS.get(cfg.loglevel.lower(), logging.INFO)
        self.error_log.setLevel(self.loglevel)
        for log in (self.error_log, self.access_log):
            log.handlers.clear()
            log.propagate = True


class WebServer(BaseApplication):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn, configured in code, serving an application built before the workers fork."""

    def __init__(self, application: Flask, options: dict[str, Any]) -> None:
        self._application = application
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._application


def _worker_exited(_server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook: remove the live-gauge files of a worker that is gone."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _worker_ending(_server: Any, _worker: Any) -> None:
    """gunicorn's worker_exit hook, the worker's last step: end it with ``os._exit``, as the stream's fork server
    ends its workers. A normal interpreter exit would run the C++ static destructors of libraries loaded in the
    master before the fork (onnxruntime's), which abort in a forked child."""
    raised = sys.exc_info()[1]  # gunicorn calls the hook from a `finally` around the worker's SystemExit
    code = raised.code if isinstance(raised, SystemExit) else (0 if raised is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _ready(server: Any) -> None:
    """gunicorn's when_ready hook: the sockets are bound (port 0 resolved)."""
    get_logger().info("web_server_ready", listening=[str(listener) for listener in server.LISTENERS])


def options(settings: ServingSettings) -> dict[str, Any]:
    """gunicorn's settings for these settings."""
    return {
        "bind": [
            f"[{settings.serve_host}]:{settings.serve_port}"
            if ":" in settings.serve_host
            else f"{settings.serve_host}:{settings.serve_port}"
        ],
        "workers": settings.serve_workers,
        "worker_class": "gthread",
        "threads": settings.serve_threads,
        "preload_app": True,
        "keepalive": 5,
        "timeout": 30,
        "graceful_timeout": 20,
        "logger_class": JsonLogger,
        "loglevel": settings.log_level.lower(),
        "child_exit": _worker_exited,
        "worker_exit": _worker_ending,
        "when_ready": _ready,
        "control_socket_disable": True,
        "proc_name": "ride-consumer-web",
    }


def main() -> int:
    """The web server's process: load the prepared model, build the application, run gunicorn until stopped."""
    settings = load_serving_settings()
    configure_logging(settings.log_level, component="web")
    if settings.prepared_model_dir is None:
        raise SettingsError("PREPARED_MODEL_DIR is not set: start the web endpoint with `python -m consumer serve`")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") != str(settings.prometheus_multiproc_dir):
        raise SettingsError(
            "PROMETHEUS_MULTIPROC_DIR must be set before the server starts (`python -m consumer serve`)"
        )
    folder = MetricsFolder(settings.prometheus_multiproc_dir)
    folder.empty()  # a previous run's worker files would count twice

    from consumer.model.scorer import load_prepared
    from consumer.serving.web import WebMetrics, create_app

    model = load_prepared(settings.prepared_model_dir)
    application = create_app(
        model,
        WebMetrics.create(),
        metrics_folder=folder,
        max_body_bytes=settings.serve_max_body_bytes,
    )
    gc.freeze()  # the model and the imports stay out of the collector's reach: their pages stay shared
    get_logger().info(
        "web_server_starting",
        port=settings.serve_port,
        workers=settings.serve_workers,
        threads=settings.serve_threads,
        model_version=model.info.version,
        model_path=model.path,
    )
    WebServer(application, options(settings)).run()
    return 0


if __name__ == "__main__":
    from consumer.errors import ConsumerError

    try:
        sys.exit(main())
    except ConsumerError as exc:
        print(f"consumer: {exc}", file=sys.stderr)
        sys.exit(2)
