"""The fork server with a scripted shard, for fast tests of its edges and of the record processor's client side.

:func:`start_server` runs this module as a program: the real ``consumer.runtime.forkserver`` (socket, fork, worker
set-up, wait statuses, shutdown) with two stand-ins: preparing loads no model, and every worker runs
:func:`scripted_shard` instead of the shard. The worker first writes ``worker <pid>`` on its stdout (the record
processor's pipe), then obeys one line of its stdin:

- ``exit N``: return N from the shard's main; ``raise N``: ``SystemExit(N)``; ``error``: an uncaught exception;
- ``signal N``: die of signal N; ``interrupt``: an uncaught KeyboardInterrupt;
- ``sleep``: block (until a signal ends it).

:class:`RecordProcessor` is the real ``record_processor.py`` speaking to such a server.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import IO, Any

from consumer.runtime.forkclient import SOCKET_VARIABLE
from consumer.runtime.forkserver import ForkServer
from consumer.runtime.resources import record_processor_path
from consumer.tools.paths import REPO_ROOT

__all__ = ["RecordProcessor", "scripted_shard", "start_server"]


def _readline(stream: IO[str], timeout: float, what: str, stderr: Any = None) -> str:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    ready = selector.select(timeout=timeout)
    selector.close()
    if not ready:
        raise AssertionError(f"no {what} within {timeout:g} s" + (f"; stderr:\n{stderr()}" if stderr else ""))
    return stream.readline()


def start_server(socket_path: Path, *, timeout: float = 60.0) -> ForkServer:
    """A fork server with the scripted shard on ``socket_path``, serving; stop it with ``.stop()``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fork_server", str(socket_path)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = _readline(process.stdout, timeout, "ready line from the fork server")
    process.stdout.close()
    assert line == "ready\n", f"the fork server said {line!r} (status {process.poll()})"
    return ForkServer(process, socket_path)


class RecordProcessor:
    """``record_processor.py`` as the daemon starts it, told to use the fork server at ``socket_path``. With no
    usable server it runs the shard itself, which stops at once here: no settings (exit 2)."""

    def __init__(self, socket_path: Path) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KCL_"))}
        env[SOCKET_VARIABLE] = str(socket_path)
        self.process = subprocess.Popen(
            [sys.executable, str(record_processor_path())],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._stderr: str | None = None

    def worker(self, timeout: float = 30.0) -> int:
        """The pid of the worker serving this processor, as the worker wrote it on the processor's stdout."""
        assert self.process.stdout is not None
        line = _readline(self.process.stdout, timeout, "worker line", self.stderr)
        assert line.startswith("worker "), f"{line!r}; stderr:\n{self.stderr()}"
        return int(line.split()[1])

    def catches(self, signum: int) -> bool:
        """Whether the record processor has a handler for ``signum`` yet (its forwarding to the worker is installed
        once the server has answered): /proc's caught-signals mask."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
        return False

    def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def wait(self, timeout: float = 30.0) -> int:
        """Its exit status (negative: the signal that killed it); fail if it has not ended within ``timeout``."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the record processor did not end within {timeout:g} s:\n{self.stderr()}") from None

    def stderr(self) -> str:
        """What it wrote on stderr, once it has ended (empty before)."""
        if self._stderr is None and self.process.poll() is not None and self.process.stderr is not None:
            self._stderr = self.process.stderr.read()
        return self._stderr or ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def scripted_shard() -> int:
    """What a worker runs instead of the shard: see the module's docstring."""
    print(f"worker {os.getpid()}", flush=True)
    command, _, argument = sys.stdin.readline().strip().partition(" ")
    if command == "exit":
        return int(argument)
    if command == "raise":
        raise SystemExit(int(argument))
    if command == "error":
        raise RuntimeError("the scripted shard fails")
    if command == "signal":
        os.kill(os.getpid(), int(argument))
    if command == "interrupt":
        raise KeyboardInterrupt
    while True:  # "sleep", and after a signal that did not end it
        time.sleep(3600)


def _main() -> int:
    """The fork server with the stand-ins; run by :func:`start_server`."""
    shard = types.ModuleType("consumer.runtime.shard")
    shard.main = scripted_shard  # type: ignore[attr-defined]
    sys.modules["consumer.runtime.shard"] = shard

    from consumer.runtime import forkserver
    from consumer.runtime.logs import configure_logging, get_logger

    def prepare() -> Any:
        configure_logging("DEBUG", component="fork_server")
        return get_logger(), None  # no model to follow

    forkserver._prepare = prepare
    return forkserver.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_main())
