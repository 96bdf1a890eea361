"""One MultiLang driver: ``record_processor.py`` in a subprocess, spoken to as the KCL daemon speaks to it.

JSON lines go to its stdin; its stdout carries the protocol's answers and nothing else. The protocol tests send one
message at a time and assert each answer, the stdout lines, the JSON logs on stderr and the exit status; the
benchmark sends ready-made ``processRecords`` lines at full speed (:func:`process_records_message`,
:meth:`MultiLangDriver.process_records`) and measures the CPU of the process that scores
(:meth:`MultiLangDriver.worker`). Either way the record processor runs the shard itself (plain) or hands it to a
worker of a fork server (``fork_server=``).

Answers are read from the stdout pipe in the caller's thread (``select`` gives the timeout), so a batch costs no
thread hand-over; stderr is collected by a thread, or goes to a file (``stderr_path=``) to be kept.
"""

from __future__ import annotations

import base64
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
import psutil

from consumer.errors import ConsumerError
from consumer.runtime.forkclient import SOCKET_VARIABLE
from consumer.runtime.forkserver import ForkServer
from consumer.runtime.resources import record_processor_path

__all__ = ["MultiLangDriver", "ProtocolError", "process_records_message"]

#: Seconds to wait for an answer, for the worker to appear, for the process to exit: a guard against a hang.
DEFAULT_TIMEOUT = 60.0


class ProtocolError(ConsumerError):
    """The record processor answered something else than the protocol's next message, or nothing in time."""


def process_records_message(
    payloads: Sequence[tuple[bytes, str]], first_sequence: int, *, arrival_ms: int | None = None
) -> bytes:
    """One ``processRecords`` line of ``(data, partition key)`` records, sequence numbers from ``first_sequence``,
    all arrived at ``arrival_ms`` (default now)."""
    arrived = int(time.time() * 1000) if arrival_ms is None else arrival_ms
    records = [
        {
            "action": "record",
            "data": base64.b64encode(data).decode("ascii"),
            "partitionKey": key,
            "sequenceNumber": str(first_sequence + i),
            "subSequenceNumber": 0,
            "approximateArrivalTimestamp": arrived,
        }
        for i, (data, key) in enumerate(payloads)
    ]
    return orjson.dumps({"action": "processRecords", "records": records, "millisBehindLatest": 0}) + b"\n"


class MultiLangDriver:
    """``record_processor.py`` started with ``env``; :meth:`send` writes one message, :meth:`receive` reads the next.

    ``fork_server``: the shard runs in a worker of that server (its socket is put in the environment).
    ``stderr_path``: stderr goes to that file (kept after the run) instead of being collected in memory.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        fork_server: ForkServer | None = None,
        stderr_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.fork_server = fork_server
        self.stderr_path = stderr_path
        if fork_server is not None:
            env = {**env, SOCKET_VARIABLE: str(fork_server.socket_path)}
        self._stderr_file: IO[bytes] | None = stderr_path.open("wb") if stderr_path is not None else None
        self.started_at = time.time()
        self.process = subprocess.Popen(
            [sys.executable, str(record_processor_path())],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file or subprocess.PIPE,
        )
        #: Every stdout line read so far (see :attr:`stdout_lines` for the ones not yet received too).
        self._lines: list[str] = []
        self._buffer = b""
        self._eof = False
        self._stderr_lines: list[str] = []
        if self._stderr_file is None:
            threading.Thread(target=self._collect_stderr, daemon=True).start()

    # --- the protocol channel -----------------------------------------------------------------------------------

    def send(self, message: Mapping[str, Any] | bytes) -> None:
        """Write one message: a mapping (serialized as one JSON line) or a ready line of bytes ending in a newline."""
        line = message if isinstance(message, bytes) else orjson.dumps(message) + b"\n"
        assert self.process.stdin is not None
        self.process.stdin.write(line)
        self.process.stdin.flush()

    def receive(self, timeout: float | None = DEFAULT_TIMEOUT) -> dict[str, Any] | None:
        """The next message the processor wrote, or None when its stdout closed. ProtocolError when nothing came
        within ``timeout`` seconds, or when a stdout line is not a JSON message."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            line = self._next_line(deadline, timeout)
            if line is None:
                return None
            self._lines.append(line.decode("utf-8", "replace"))
            if line.strip():
                try:
                    return dict(orjson.loads(line))
                except orjson.JSONDecodeError:
                    raise ProtocolError(f"not a protocol message on stdout: {line[:200]!r}") from None

    def _next_line(self, deadline: float | None, timeout: float | None) -> bytes | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            if self._eof:
                rest, self._buffer = self._buffer, b""
                return rest or None
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                raise ProtocolError(f"no answer within {timeout:g}s; stderr:\n{self.stderr[-4000:]}")
            self._read_some(fd)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def _read_some(self, fd: int) -> None:
        chunk = os.read(fd, 1 << 16)
        if chunk:
            self._buffer += chunk
        else:
            self._eof = True

    def _drain_stdout(self) -> None:
        """Read what the (exited) processor left in the pipe, without waiting for more."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while not self._eof and select.select([fd], [], [], 0)[0]:
            self._read_some(fd)

    @property
    def stdout_lines(self) -> list[str]:
        """Every line the processor wrote on stdout so far: received ones, then any still unread."""
        return self._lines + self._buffer.decode("utf-8", "replace").splitlines(keepends=True)

    # --- stderr ---------------------------------------------------------------------------------------------------

    def _collect_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr_lines.append(line.decode("utf-8", "replace"))

    @property
    def stderr(self) -> str:
        """What the processor (or its worker) wrote on stderr so far."""
        if self.stderr_path is not None:
            return self.stderr_path.read_text(errors="replace")
        return "".join(self._stderr_lines)

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr, parsed."""
        return [dict(orjson.loads(line)) for line in self.stderr.splitlines() if line.startswith("{")]

    # --- the shard's life, as the daemon drives it ----------------------------------------------------------------

    def expect(self, answer: Mapping[str, Any]) -> None:
        """Receive the next message; ProtocolError unless it equals ``answer``."""
        got = self.receive()
        if got != answer:
            raise ProtocolError(f"expected {dict(answer)}, got {got}; stderr: {self.stderr[-4000:]}")

    def initialize(self, shard_id: str = "shardId-000000000000", sequence_number: str = "LATEST") -> None:
        self.send(
            {"action": "initialize", "shardId": shard_id, "sequenceNumber": sequence_number, "subSequenceNumber": 0}
        )
        self.expect({"action": "status", "responseFor": "initialize"})

    def process_records(self, message: bytes) -> float:
        """Send one ``processRecords`` line and answer its checkpoint; return when the checkpoint was asked (by then
        the batch is written)."""
        self.send(message)
        asked = self.receive()
        written_at = time.time()
        if asked is None or asked.get("action") != "checkpoint":
            raise ProtocolError(f"expected a checkpoint, got {asked}; stderr: {self.stderr[-4000:]}")
        self.send(
            {
                "action": "checkpoint",
                "sequenceNumber": asked["sequenceNumber"],
                "subSequenceNumber": asked["subSequenceNumber"],
                "error": None,
            }
        )
        self.expect({"action": "status", "responseFor": "processRecords"})
        return written_at

    def close(self) -> int:
        """Lose the lease (no checkpoint), close stdin; the exit status."""
        self.send({"action": "leaseLost"})
        self.expect({"action": "status", "responseFor": "leaseLost"})
        return self.exit_code()

    def exit_code(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Close stdin and wait for the process; its exit status (negative: the signal that ended it)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        status = self.process.wait(timeout=timeout)
        self._drain_stdout()
        if self._stderr_file is not None:
            self._stderr_file.close()
        return status

    def kill(self) -> None:
        """End the processor now if it still runs (cleanup after a failed test or run)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._stderr_file is not None:
            self._stderr_file.close()

    def worker(self, timeout: float = DEFAULT_TIMEOUT) -> psutil.Process:
        """The process that runs the shard: the fork server's worker that holds this processor's stderr, or the
        processor itself when it has no fork server."""
        if self.fork_server is None:
            return psutil.Process(self.process.pid)
        ours = self._stderr_file or self.process.stderr
        assert ours is not None
        target = os.readlink(f"/proc/self/fd/{ours.fileno()}")  # a pipe's two ends have the same name
        server = psutil.Process(self.fork_server.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in server.children():
                try:
                    if os.readlink(f"/proc/{child.pid}/fd/2") == target:
                        return child
                except OSError:
                    continue
            time.sleep(0.05)
        raise ProtocolError(f"no fork-server worker writes to this processor's stderr; stderr:\n{self.stderr[-4000:]}")
