"""The fork server's edges (consumer/runtime/forkserver.py) and the record processor's client side
(consumer/runtime/forkclient.py), with a scripted shard in the workers: a record processor ends exactly as its
worker did, signals pass through both ways, a refused or absent server leaves the processor to run the shard
itself, and neither side outlives the other. The real shard through the fork server is tested in tests/protocol."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumer.runtime.forkserver import ForkServer
from consumer.tools.harness import wait_for
from tests.support.fork_server import RecordProcessor, start_server
from tests.support.probes import gone

REPLY = struct.Struct("!ci")  # the server's replies: b"P" + worker pid, b"S" + wait status, b"E" + 0 (refused)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    server = start_server(tmp_path / "fork.sock")
    yield server
    server.stop()


@pytest.fixture
def processor(server: ForkServer) -> Iterator[Callable[[], RecordProcessor]]:
    """``processor()``: a record processor handing its shard to ``server``; killed at the end if still running."""
    started: list[RecordProcessor] = []

    def start() -> RecordProcessor:
        started.append(RecordProcessor(server.socket_path))
        return started[-1]

    yield start
    for item in started:
        item.kill()


@pytest.mark.parametrize(
    ("command", "status"),
    [("exit 0", 0), ("exit 3", 3), ("raise 4", 4), ("error", 1)],
    ids=["returns 0", "returns 3", "SystemExit(4)", "uncaught exception"],
)
def test_the_record_processor_exits_with_its_workers_status(processor, command, status):
    record_processor = processor()
    worker = record_processor.worker()
    assert worker != record_processor.process.pid  # the shard ran in a forked worker, on the processor's pipes

    record_processor.tell(command)

    assert record_processor.wait() == status, record_processor.stderr()


@pytest.mark.parametrize(
    ("command", "signum"),
    [(f"signal {int(signal.SIGUSR1)}", signal.SIGUSR1), ("interrupt", signal.SIGINT)],
    ids=["SIGUSR1", "KeyboardInterrupt"],
)
def test_a_worker_killed_by_a_signal_kills_its_record_processor_with_the_same_signal(processor, command, signum):
    record_processor = processor()
    record_processor.worker()

    record_processor.tell(command)

    assert record_processor.wait() == -signum, record_processor.stderr()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda signum: signum.name)
def test_a_signal_to_the_record_processor_is_passed_to_its_worker_and_both_die_of_it(processor, signum):
    record_processor = processor()
    worker = record_processor.worker()
    record_processor.tell("sleep")
    # The worker may write its line before its record processor has the server's answer and installs the
    # forwarding; a signal before that is the interpreter's to handle (and is lost where the caller ignores SIGINT,
    # as a shell's background job does).
    assert wait_for(lambda: record_processor.catches(signum), timeout=30, interval=0.01)

    record_processor.process.send_signal(signum)

    assert record_processor.wait() == -signum, record_processor.stderr()
    assert gone(worker), "the worker outlived its record processor"


def test_a_record_processor_that_dies_has_its_worker_killed_and_the_server_serves_on(processor, server):
    record_processor = processor()
    worker = record_processor.worker()
    record_processor.tell("sleep")

    record_processor.process.kill()

    assert gone(worker), "the worker of a dead record processor was not killed"
    assert server.process.poll() is None
    another = processor()
    another.worker()
    another.tell("exit 5")
    assert another.wait() == 5, another.stderr()


def test_when_the_server_dies_its_workers_die_and_their_record_processors_exit_1(processor, server):
    record_processor = processor()
    worker = record_processor.worker()
    record_processor.tell("sleep")

    server.process.kill()

    assert record_processor.wait() == 1, record_processor.stderr()
    assert gone(worker), "a worker outlived its fork server"
    assert '"event": "fork_server_lost"' in record_processor.stderr()


def test_stopping_the_server_stops_its_workers_and_their_record_processors_die_of_sigterm(processor, server):
    record_processor = processor()
    worker = record_processor.worker()
    record_processor.tell("sleep")

    assert server.stop() == 0

    assert record_processor.wait() == -signal.SIGTERM, record_processor.stderr()
    assert gone(worker)


@pytest.mark.parametrize(
    ("message", "descriptors"),
    [(b"F", 1), (b"X", 3)],
    ids=["one descriptor instead of three", "an unknown request"],
)
def test_the_server_refuses_a_malformed_request_and_serves_on(server, processor, message, descriptors):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(server.socket_path))
        socket.send_fds(client, [message], [0, 1, 2][:descriptors])
        reply = client.recv(REPLY.size)

    assert REPLY.unpack(reply) == (b"E", 0)
    record_processor = processor()
    record_processor.worker()
    record_processor.tell("exit 0")
    assert record_processor.wait() == 0, record_processor.stderr()


def refusing_server(path: Path) -> threading.Thread:
    """A server on ``path`` that answers its one request with a refusal, as the fork server does when it cannot
    fork."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def refuse() -> None:
        with listener, listener.accept()[0] as connection:
            _, fds, _, _ = socket.recv_fds(connection, 16, 3)
            for fd in fds:
                os.close(fd)
            connection.sendall(REPLY.pack(b"E", 0))

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("server_state", ["refusing", "absent"])
def test_a_record_processor_without_a_usable_server_runs_the_shard_itself(tmp_path, server_state):
    path = tmp_path / "fork.sock"
    if server_state == "refusing":
        refusing_server(path)

    record_processor = RecordProcessor(path)

    # The shard ran in this process: it found no settings (this test gives none) and stopped with status 2.
    assert record_processor.wait() == 2, record_processor.stderr()
    stderr = record_processor.stderr()
    note = "fork_server_refused" if server_state == "refusing" else "fork_server_unavailable"
    assert f'"event": "{note}"' in stderr and '"fallback": "in-process"' in stderr
    assert "record processor: " in stderr  # the in-process shard's own message about its settings
