"""The launcher (``python -m consumer run``) supervising a fake daemon, for fast tests of its supervision.

:class:`LauncherRun` starts this module as a program: the real CLI and launcher (settings, jar check, properties,
metrics server, the daemon in its own process group, signal forwarding, exit status) with two stand-ins: the model
step (:func:`consumer.runtime.preparation.prepare_model`, replaced in the launcher) returns a prepared directory
that holds only ``model.json`` (no MLflow, no child process), and JAVA_BIN is
:mod:`tests.support.fake_daemon`. ``FAKE_KILL_MARGIN_SECONDS`` shortens the launcher's margin after the daemon's
shutdown grace (``shutdownGraceMillis``, set through KCL_EXTRA_PROPERTIES).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from consumer.tools.paths import REPO_ROOT

__all__ = ["LauncherRun", "fake_java"]

FAKE_DAEMON = Path(__file__).with_name("fake_daemon.py")


def fake_java(directory: Path) -> Path:
    """An executable that runs :mod:`tests.support.fake_daemon` with this interpreter, to be given as JAVA_BIN."""
    path = directory / "java"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_DAEMON}" "$@"\n')
    path.chmod(0o755)
    return path


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux: the SigCgt mask in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    caught = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(caught & (1 << (signum - 1)))


class LauncherRun:
    """The launcher under test, as a subprocess, with the fake daemon's state in ``directory``."""

    def __init__(
        self, directory: Path, *, grace_millis: int = 20_000, kill_margin_seconds: float = 15.0, **daemon: str
    ):
        """``daemon``: the fake daemon's part, e.g. ``FAKE_DAEMON_ON_SIGTERM="die"`` (see its module)."""
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        prepared = directory / "prepared"
        prepared.mkdir(exist_ok=True)
        (prepared / "model.json").write_text(json.dumps({"uri": "test://fake", "name": "fake", "version": "1"}))
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KCL_", "FAKE_"))}
        env.update(
            AWS_REGION="us-east-1",
            INPUT_STREAM_NAME="rides",
            PREDICTIONS_STREAM_NAME="predictions",
            DEAD_LETTER_STREAM_NAME="dead-letters",
            KCL_APPLICATION_NAME="launcher-test",
            MODEL_URI="test://fake",
            MODEL_CACHE_DIR=str(directory / "cache"),
            CONSUMER_WORK_DIR=str(directory / "work"),
            PROMETHEUS_MULTIPROC_DIR=str(directory / "metrics"),
            METRICS_HOST="127.0.0.1",
            METRICS_PORT="0",
            SHARD_FORK_SERVER="false",
            JAVA_BIN=str(fake_java(directory)),
            KCL_EXTRA_PROPERTIES=json.dumps({"shutdownGraceMillis": str(grace_millis)}),
            FAKE_PREPARED_MODEL_DIR=str(prepared),
            FAKE_KILL_MARGIN_SECONDS=str(kill_margin_seconds),
            FAKE_DAEMON_DIR=str(directory),
            **daemon,
        )
        self.log_path = directory / "launcher.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.launcher"],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[str]:
        """What the fake daemon did, in order (``started``, ``SIGTERM``)."""
        path = self.directory / "events"
        return path.read_text().splitlines() if path.exists() else []

    def wait_for_event(self, event: str, timeout: float = 30.0) -> None:
        """Until the fake daemon has noted ``event``."""
        deadline = time.monotonic() + timeout
        while event not in self.events():
            if time.monotonic() > deadline:
                raise AssertionError(f"the fake daemon did not note {event} within {timeout:g} s:\n{self.log()}")
            time.sleep(0.02)

    def _pid(self, name: str, timeout: float) -> int:
        path = self.directory / name
        deadline = time.monotonic() + timeout
        while not path.exists() or not path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"no {name} within {timeout:g} s (launcher status {self.process.poll()}):\n{self.log()}"
                )
            time.sleep(0.02)
        return int(path.read_text())

    def daemon_pid(self, timeout: float = 60.0) -> int:
        return self._pid("daemon.pid", timeout)

    def child_pid(self, timeout: float = 60.0) -> int:
        """The record processor the fake daemon started (``FAKE_DAEMON_CHILD=1``)."""
        return self._pid("child.pid", timeout)

    def wait_until_supervising(self, timeout: float = 60.0) -> None:
        """Until the daemon runs and the launcher has its SIGTERM handler in place (a signal sent before that would
        find Python's default action)."""
        self.daemon_pid(timeout)
        deadline = time.monotonic() + timeout
        while not _catches(self.process.pid, signal.SIGTERM):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the launcher did not start supervising within {timeout:g} s:\n{self.log()}")
            time.sleep(0.02)

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        """The launcher's exit status; fail (killing it) if it has not exited within ``timeout`` seconds."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the launcher did not exit within {timeout:g} s:\n{self.log()}") from None

    def kill(self) -> None:
        """Kill the launcher and the fake daemon's process group, if still there (a test's cleanup)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        pid_file = self.directory / "daemon.pid"
        if pid_file.exists() and pid_file.read_text():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _main() -> int:
    """The launcher with the model step stubbed out; run by :class:`LauncherRun`."""
    prepared = Path(os.environ["FAKE_PREPARED_MODEL_DIR"])

    from consumer.cli import main
    from consumer.runtime import launcher
    from consumer.runtime.preparation import Prepared

    launcher.prepare_model = lambda settings, **_: Prepared(prepared, 0.0)
    launcher.KILL_MARGIN_SECONDS = float(os.environ["FAKE_KILL_MARGIN_SECONDS"])
    return main(["run"])


if __name__ == "__main__":
    sys.exit(_main())
