"""Local Kinesis and DynamoDB emulators as subprocesses, for development and tests.

``LocalStack`` starts npm ``kinesis-local`` (kinesis-mock; the KCL needs its HTTP/2 support) and npm ``dynalite``
(the lease table) with Node, each on a free port chosen at start (or on ports you give), waits until each answers,
and stops both on exit, also when the body raises::

    with LocalStack(work_dir=tmp_path) as stack:
        stack.create_stream("rides", shards=2)
        subprocess.run([...], env={**os.environ, **stack.env()})

Limits worth knowing:

- kinesis-local has no bind-host option: it listens on ALL interfaces (plain and TLS port). Anyone who can reach
  this machine can reach it while it runs. Development and tests only. dynalite is bound to 127.0.0.1.
- kinesis-local needs ``KINESIS_MOCK_CERT_PATH`` (it crashes with ENOENT server.json otherwise) and opens a TLS
  port too, which is given a free port of its own so parallel runs do not collide. Use the plain port: the TLS
  certificate has no SAN and the KCL refuses it.
- Data lives in memory; it is gone when the stack stops.
- Emulator output goes to ``kinesis-local.log`` and ``dynalite.log`` in ``work_dir``, never to the caller's stdout.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from consumer.errors import ConsumerError
from consumer.runtime.aws import KinesisClient, kinesis_client
from consumer.runtime.process import die_with_parent
from consumer.tools.paths import NODE_MODULES
from consumer.tools.streams import DUMMY_CREDENTIALS, create_stream

__all__ = [
    "DEFAULT_NODE_MODULES",
    "KINESIS_FAST_SETTINGS",
    "EmulatorNotInstalled",
    "EmulatorStartError",
    "LocalStack",
    "LocalStackError",
    "StartupTimings",
]

#: ``<repo>/node_modules``: where the repository's package.json (``make setup``) installs the emulators.
DEFAULT_NODE_MODULES = NODE_MODULES

REGION = "us-east-1"

#: kinesis-local's state transitions default to 500 ms each (CREATE_STREAM_DURATION & co, Scala durations).
#: Tests create many streams and reshard; 10 ms keeps each of them fast. SHARD_LIMIT (default 50 per account)
#: is the sum over all streams of one session, so it is raised too.
KINESIS_FAST_SETTINGS: Mapping[str, str] = {
    "CREATE_STREAM_DURATION": "10ms",
    "DELETE_STREAM_DURATION": "10ms",
    "UPDATE_SHARD_COUNT_DURATION": "10ms",
    "SPLIT_SHARD_DURATION": "10ms",
    "MERGE_SHARDS_DURATION": "10ms",
    "REGISTER_STREAM_CONSUMER_DURATION": "10ms",
    "DEREGISTER_STREAM_CONSUMER_DURATION": "10ms",
    "UPDATE_STREAM_MODE_DURATION": "10ms",
    "START_STREAM_ENCRYPTION_DURATION": "10ms",
    "STOP_STREAM_ENCRYPTION_DURATION": "10ms",
    "SHARD_LIMIT": "1000",
    "ON_DEMAND_STREAM_COUNT_LIMIT": "100",
}

_PORT_ATTEMPTS = 3  # a free port chosen at start can be taken by someone else before the emulator binds it
_LOG_TAIL_LINES = 40


class LocalStackError(ConsumerError):
    """The local emulators cannot be used."""


class EmulatorNotInstalled(LocalStackError):
    """Node or an emulator package is missing. The message says how to install it (``make setup``)."""


class EmulatorStartError(LocalStackError):
    """An emulator exited or did not answer in time. Carries the tail of its log."""

    def __init__(self, name: str, reason: str, *, log_path: Path, log_tail: str) -> None:
        super().__init__(f"{name} did not start: {reason}\n--- last lines of {log_path} ---\n{log_tail}")
        self.name = name
        self.reason = reason
        self.log_path = log_path
        self.log_tail = log_tail


@dataclass
class StartupTimings:
    """Seconds from launching each emulator until it answered; ``total`` covers both (they start in parallel)."""

    kinesis: float = 0.0
    dynamodb: float = 0.0
    total: float = 0.0
    stop: float = 0.0


@dataclass
class _Emulator:
    """One emulator subprocess. ``configure(ports)`` returns its extra argv and environment for those ports."""

    name: str
    command: list[str]
    configure: Callable[[dict[str, int]], tuple[list[str], dict[str, str]]]
    port_names: tuple[str, ...]
    fixed_ports: dict[str, int | None]
    health_path: str
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    started_at: float = 0.0

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['plain']}{self.health_path}"

    @property
    def ports_are_ours(self) -> bool:
        """True when every port was chosen at start, so a collision can be retried on other ports."""
        return not any(self.fixed_ports.values())

    def assign_ports(self) -> None:
        ports: dict[str, int] = {}
        for name in self.port_names:
            port = self.fixed_ports.get(name) or free_port()
            while port in ports.values():
                port = free_port()
            ports[name] = port
        self.ports = ports


def free_port() -> int:
    """A TCP port that is free on all interfaces right now (kinesis-local binds all of them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """SIGTERM the emulator when the Python process that started it dies, even by SIGKILL."""
    die_with_parent(signal.SIGTERM)


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(log not readable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:  # a local http URL we built
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LocalStack:
    """kinesis-local + dynalite as subprocesses; a context manager. See the module docstring.

    :param work_dir: where the emulator logs go. ``None``: a temporary directory, removed on a clean exit and
        kept (its path is in :attr:`work_dir`) when the body raised.
    :param node_modules: the directory holding ``kinesis-local`` and ``dynalite``; default ``<repo>/node_modules``.
    :param node: the Node executable.
    :param kinesis_port, kinesis_tls_port, dynamodb_port: fixed ports; ``None`` picks a free one at start.
    :param start_timeout: seconds each emulator gets to answer.
    :param stop_timeout: seconds each emulator gets to exit after SIGTERM before it is killed.
    :param kinesis_settings: extra environment for kinesis-local, e.g. ``{"LOG_LEVEL": "DEBUG"}``;
        it overrides :data:`KINESIS_FAST_SETTINGS`.
    :param dynamodb_path: a directory for dynalite's LevelDB store; ``None`` keeps the tables in memory. With a
        path the tables survive :meth:`restart_dynamodb`.
    :param die_with_parent: (Linux) the emulators get SIGTERM if this Python process dies without stopping them
        (even by SIGKILL). The kernel ties that signal to the starting *thread*, so it only applies when the stack
        is started from the main thread.
    """

    def __init__(
        self,
        work_dir: Path | str | None = None,
        *,
        node_modules: Path | str | None = None,
        node: str = "node",
        kinesis_port: int | None = None,
        kinesis_tls_port: int | None = None,
        dynamodb_port: int | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        kinesis_settings: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
        dynamodb_path: Path | str | None = None,
    ) -> None:
        self.node_modules = Path(node_modules) if node_modules is not None else DEFAULT_NODE_MODULES
        self.node = node
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.timings = StartupTimings()
        self._fixed_ports = {"kinesis": kinesis_port, "kinesis_tls": kinesis_tls_port, "dynamodb": dynamodb_port}
        self._kinesis_settings = {**KINESIS_FAST_SETTINGS, **(kinesis_settings or {})}
        self._die_with_parent = die_with_parent
        self._dynamodb_path = Path(dynamodb_path) if dynamodb_path is not None else None
        self._own_work_dir = work_dir is None
        self._work_dir = Path(work_dir) if work_dir is not None else None
        self._emulators: list[_Emulator] = []

    # ----------------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(keep_work_dir=exc_type is not None)

    def start(self) -> Self:
        """Check the installation, launch both emulators in parallel and wait until both answer.

        Raises :class:`EmulatorNotInstalled` or :class:`EmulatorStartError`; nothing is left running then.
        """
        if self._emulators:
            raise LocalStackError("this LocalStack is already started")
        node_path, kinesis_main, dynalite_cli = self.check_installation()
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="localstack-"))
        self._work_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        try:
            kinesis = self._kinesis(node_path, kinesis_main)
            dynamodb = self._dynalite(node_path, dynalite_cli)
            self._emulators = [kinesis, dynamodb]
            for emulator in self._emulators:
                self._launch(emulator)
            for emulator, attr in ((kinesis, "kinesis"), (dynamodb, "dynamodb")):
                setattr(self.timings, attr, self._wait_until_ready(emulator))
        except BaseException:
            self.stop(keep_work_dir=True)
            raise
        self.timings.total = time.monotonic() - began
        return self

    def stop(self, *, keep_work_dir: bool = False) -> None:
        """SIGTERM both emulators, wait up to ``stop_timeout`` each, SIGKILL what is left. Safe to call twice."""
        began = time.monotonic()
        running = [e for e in self._emulators if e.process is not None]
        for process in (e.process for e in running):
            if process is not None and process.poll() is None:
                process.terminate()
        for emulator in running:
            self._reap(emulator)
        self._emulators = []
        if running:
            self.timings.stop = time.monotonic() - began
        if self._own_work_dir and not keep_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    def restart_dynamodb(self, *, down_seconds: float = 0.0) -> None:
        """Stop dynalite (SIGTERM), wait ``down_seconds``, start it again on the same port and wait until it
        answers. With ``dynamodb_path`` its tables and items are kept; without, it comes back empty."""
        emulator = self._emulator("dynalite")
        port = emulator.ports["plain"]
        self._reap(emulator)
        time.sleep(down_seconds)
        emulator.fixed_ports = {"plain": port}
        self._launch(emulator)
        self.timings.dynamodb = self._wait_until_ready(emulator)

    # ------------------------------------------------------------------------------------------------- access
    @property
    def work_dir(self) -> Path:
        """Where the emulator logs are (``kinesis-local.log``, ``dynalite.log``)."""
        if self._work_dir is None:
            raise LocalStackError("LocalStack is not started")
        return self._work_dir

    @property
    def kinesis_port(self) -> int:
        return self._emulator("kinesis-local").ports["plain"]

    @property
    def dynamodb_port(self) -> int:
        return self._emulator("dynalite").ports["plain"]

    @property
    def kinesis_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: kinesis-local's plain (HTTP/1.1 and h2c) port."""
        return f"http://127.0.0.1:{self.kinesis_port}"

    @property
    def dynamodb_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: dynalite."""
        return f"http://127.0.0.1:{self.dynamodb_port}"

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each running emulator, by name."""
        return {e.name: e.process.pid for e in self._emulators if e.process is not None}

    def env(self) -> dict[str, str]:
        """Environment for a process that should talk to these emulators (boto3, the KCL daemon).

        Both ``AWS_REGION`` (AWS SDK for Java, the project's settings) and ``AWS_DEFAULT_REGION`` (botocore
        1.x reads only this one) are set.
        """
        return {
            "AWS_ENDPOINT_URL_KINESIS": self.kinesis_endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            **DUMMY_CREDENTIALS,
        }

    def kinesis_client(self) -> KinesisClient:
        """A boto3 Kinesis client for this stack (dummy credentials, us-east-1)."""
        return kinesis_client(endpoint_url=self.kinesis_endpoint, region=REGION, credentials=DUMMY_CREDENTIALS)

    def create_stream(self, name: str, shards: int = 1, *, timeout: float = 30.0) -> None:
        """Create a stream with ``shards`` shards and wait until it is ACTIVE (an existing one is waited for)."""
        create_stream(self.kinesis_client(), name, shards, timeout=timeout)

    # ------------------------------------------------------------------------------------------------ helpers
    def _emulator(self, name: str) -> _Emulator:
        for emulator in self._emulators:
            if emulator.name == name:
                return emulator
        raise LocalStackError("LocalStack is not started")

    def check_installation(self) -> tuple[str, Path, Path]:
        """Node and both packages are there: ``(node, kinesis-local main.js, dynalite cli.js)``, or
        :class:`EmulatorNotInstalled` with a message that says to run ``make setup``."""
        node_path = shutil.which(self.node)
        if node_path is None:
            raise EmulatorNotInstalled(
                f"Node.js ({self.node!r}) is not on PATH; the emulators need Node 20: install it, then run `make setup`"
            )
        kinesis_main = self.node_modules / "kinesis-local" / "main.js"
        needed = [kinesis_main, self.node_modules / "kinesis-local" / "server.json"]
        dynalite_cli = self.node_modules / "dynalite" / "cli.js"
        needed.append(dynalite_cli)
        missing = [str(path) for path in needed if not path.is_file()]
        if missing:
            raise EmulatorNotInstalled(
                f"the emulators are not installed in {self.node_modules} (missing {', '.join(missing)}): "
                "run `make setup` (npm install of kinesis-local and dynalite)"
            )
        return node_path, kinesis_main, dynalite_cli

    def _kinesis(self, node_path: str, main_js: Path) -> _Emulator:
        def configure(ports: dict[str, int]) -> tuple[list[str], dict[str, str]]:
            env = {
                "LOG_LEVEL": "WARN",
                "SHOULD_PERSIST_DATA": "false",
                **self._kinesis_settings,
                "KINESIS_MOCK_CERT_PATH": str(main_js.parent / "server.json"),
                "KINESIS_MOCK_PLAIN_PORT": str(ports["plain"]),
                "KINESIS_MOCK_TLS_PORT": str(ports["tls"]),
                "AWS_REGION": REGION,  # its default region; a caller's AWS_REGION must not move the streams
            }
            return [], env

        return _Emulator(
            name="kinesis-local",
            command=[node_path, str(main_js)],
            configure=configure,
            port_names=("plain", "tls"),
            fixed_ports={"plain": self._fixed_ports["kinesis"], "tls": self._fixed_ports["kinesis_tls"]},
            health_path="/healthcheck",
            log_path=self.work_dir / "kinesis-local.log",
        )

    def _dynalite(self, node_path: str, cli_js: Path) -> _Emulator:
        def configure(ports: dict[str, int]) -> tuple[list[str], dict[str, str]]:
            state_ms = ["--createTableMs", "10", "--deleteTableMs", "10", "--updateTableMs", "10"]
            store = ["--path", str(self._dynamodb_path)] if self._dynamodb_path is not None else []
            return ["--host", "127.0.0.1", "--port", str(ports["plain"]), *state_ms, *store], {}

        return _Emulator(
            name="dynalite",
            command=[node_path, str(cli_js)],
            configure=configure,
            port_names=("plain",),
            fixed_ports={"plain": self._fixed_ports["dynamodb"]},
            health_path="/",
            log_path=self.work_dir / "dynalite.log",
        )

    def _launch(self, emulator: _Emulator) -> None:
        emulator.assign_ports()
        args, env = emulator.configure(emulator.ports)
        command = [*emulator.command, *args]
        if emulator.log_file is not None:
            emulator.log_file.close()
        emulator.log_file = emulator.log_path.open("ab")
        emulator.log_file.write(f"=== {' '.join(command)} (ports {emulator.ports})\n".encode())
        emulator.log_file.flush()
        emulator.started_at = time.monotonic()
        emulator.process = subprocess.Popen(  # a fixed command built from our own paths
            command,
            stdin=subprocess.DEVNULL,
            stdout=emulator.log_file,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,  # kinesis-local writes its persistence dir relative to the cwd
            env={**os.environ, **env},
            start_new_session=True,  # a Ctrl-C reaches Python, whose __exit__ stops the emulators in order
            preexec_fn=_stop_with_parent if self._tie_to_this_thread() else None,
        )

    def _tie_to_this_thread(self) -> bool:
        # PR_SET_PDEATHSIG fires when the starting *thread* ends: only tie the emulators to the main thread.
        return (
            self._die_with_parent
            and sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()
        )

    def _wait_until_ready(self, emulator: _Emulator) -> float:
        """Seconds from launch until the emulator answered; relaunch on new ports when a chosen port was taken."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            process = emulator.process
            if process is None:
                raise LocalStackError(f"{emulator.name} was not launched")
            deadline = emulator.started_at + self.start_timeout
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    break
                if _answers(emulator.health_url):
                    return time.monotonic() - emulator.started_at
                time.sleep(0.05)
            exited = process.poll()
            if exited is None:
                self._reap(emulator)
                raise EmulatorStartError(
                    emulator.name,
                    f"no answer at {emulator.health_url} within {self.start_timeout:g} s",
                    log_path=emulator.log_path,
                    log_tail=_log_tail(emulator.log_path),
                )
            tail = _log_tail(emulator.log_path)
            if emulator.ports_are_ours and "EADDRINUSE" in tail and attempt < _PORT_ATTEMPTS:
                self._launch(emulator)
                continue
            raise EmulatorStartError(
                emulator.name, f"exited with code {exited}", log_path=emulator.log_path, log_tail=tail
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _reap(self, emulator: _Emulator) -> None:
        process = emulator.process
        if process is not None:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=self.stop_timeout)
        if emulator.log_file is not None:
            emulator.log_file.close()
            emulator.log_file = None
