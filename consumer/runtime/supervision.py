"""The launcher's supervision: stop signals from the first instant, the daemon's start, its wait, its exit status.

- :class:`StopSignals` takes SIGTERM and SIGINT before anything else starts. Before the daemon runs, a stop ends
  start-up where it is (:class:`StopRequested` is raised in the launcher's main thread, and each step's cleanup
  runs on the way out; exit 0). Once the daemon runs, a stop is forwarded to it as SIGTERM: its shutdown hook
  drains, every processor is told and checkpoints, and the daemon gets its shutdown grace plus a margin before
  its process group is killed.
- :func:`start_daemon` starts the daemon in a session of its own (its record processors join its process group,
  which the launcher kills when the daemon has ended) and tied to the launcher by the parent-death signal: a
  launcher killed by SIGKILL, which runs no cleanup, still takes the daemon with it (and the fork server, started
  the same way), so nothing of the consumer outlives it.
- :func:`exit_status`: 0 only when the daemon stopped because it was asked to. A daemon that ends on its own (it
  gave up initialising, its input stream does not exist, the JVM failed) is a failure whatever its status (the KCL
  exits 0 when it gives up), logged in one line with the cause the daemon logged
  (:meth:`~consumer.runtime.daemonlog.DaemonOutput.cause`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType
from typing import IO, Any

from consumer.runtime.daemonlog import DaemonOutput
from consumer.runtime.logs import get_logger
from consumer.runtime.process import tied_to_this_process

__all__ = ["KILL_MARGIN_SECONDS", "StopRequested", "StopSignals", "exit_status", "start_daemon", "supervise"]

#: Extra seconds the daemon gets after its own shutdown grace before the launcher kills it.
KILL_MARGIN_SECONDS = 15.0
#: The launcher's exit status when the daemon stopped on its own with status 0.
UNREQUESTED_EXIT_STATUS = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(BaseException):
    """SIGTERM or SIGINT arrived during start-up. A BaseException, like KeyboardInterrupt: no ``except Exception``
    on the way out swallows it."""


class StopSignals:
    """SIGTERM/SIGINT handling for the launcher's whole life; use as a context manager around it."""

    def __init__(self) -> None:
        self.requested_at: float | None = None  # monotonic time of the first stop signal
        self.signal_name: str | None = None
        self._daemon: subprocess.Popen[bytes] | None = None
        self._deferred = 0  # > 0 while a step must not be interrupted halfway (a child being started)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {signum: signal.signal(signum, self._handle) for signum in _STOP_SIGNALS}
        return self

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A step that starts a child: a stop that arrives meanwhile is acted on when it has returned (so that
        the child is known and can be stopped), not halfway through it."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        self.check()

    def check(self) -> None:
        """Raise :class:`StopRequested` if a stop arrived and nothing runs yet that it could be forwarded to."""
        if self.requested and self._daemon is None and not self._deferred:
            raise StopRequested

    def daemon_started(self, daemon: subprocess.Popen[bytes]) -> None:
        """From now on a stop goes to the daemon; one that arrived while it was being started goes now."""
        self._daemon = daemon
        if self.requested:
            daemon.send_signal(signal.SIGTERM)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested:
            return
        self.requested_at = time.monotonic()
        self.signal_name = signal.Signals(signum).name
        get_logger().info("stop_requested", signal=self.signal_name, daemon_running=self._daemon is not None)
        if self._daemon is not None:
            # The daemon's shutdown hook drains: shutdownRequested reaches every processor, which checkpoints.
            self._daemon.send_signal(signal.SIGTERM)
        else:
            self.check()


def start_daemon(command: Sequence[str], env: Mapping[str, str], stderr: int | IO[bytes]) -> subprocess.Popen[bytes]:
    """Start the daemon in its own session, tied to this process by the parent-death signal (SIGKILL: when the
    launcher is gone, nobody would enforce a graceful stop's deadline)."""
    return subprocess.Popen(
        command,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=tied_to_this_process(signal.SIGKILL),  # only prctl and getppid run in the child
    )


def supervise(daemon: subprocess.Popen[bytes], stop: StopSignals, deadline_after_stop: float) -> int:
    """Wait for the daemon; kill its process group if it outlives its shutdown grace after a stop."""
    while True:
        try:
            return daemon.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if stop.requested_at is not None and time.monotonic() - stop.requested_at > deadline_after_stop:
            get_logger().error("daemon_kill", reason="did not stop within the shutdown grace")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)


def exit_status(status: int, stop: StopSignals, output: DaemonOutput) -> int:
    """The launcher's exit status for a daemon that ended with ``status``; logs why, in one line."""
    log = get_logger()
    if stop.requested and status in (0, 128 + signal.SIGTERM, -signal.SIGTERM):
        log.info("daemon_stopped", status=status, signal=stop.signal_name)
        return 0
    code = status if status > 0 else (128 - status if status < 0 else UNREQUESTED_EXIT_STATUS)
    cause = output.cause()
    log.error(
        "daemon_exited",
        status=status,
        exit_status=code,
        requested=stop.requested,
        cause=cause[0] if cause else "the daemon logged no warning or error",
        cause_logged_times=cause[1] if cause else 0,
        last_error=output.last_error(),
    )
    return code
