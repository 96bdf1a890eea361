"""record_processor.py through the fork server: every MultiLang protocol test again, plus what forking changes.

The protocol tests of test_multilang.py are collected here a second time with a ``start_processor`` that first
starts a fork server (``python -m consumer.runtime.forkserver``) with the processor's environment, so the same replies,
writes, checkpoints and exit statuses are asserted for a record processor whose shard runs in a forked worker.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from consumer.model.compile import compile_into
from consumer.model.current import publish
from consumer.model.prepared import METADATA_FILE, ModelInfo
from consumer.runtime.forkclient import SOCKET_VARIABLE
from consumer.runtime.forkserver import ForkServer, start
from consumer.tools.harness import wait_for
from consumer.tools.multilang import MultiLangDriver
from consumer.tools.paths import REPO_ROOT
from tests.protocol.test_multilang import *  # noqa: F403 - the protocol tests, run again through the fork server
from tests.protocol.test_multilang import answer_checkpoint, initialize, process, record
from tests.support.factories import ride_payload


@pytest.fixture(scope="module")
def compiled_model(prepared_model, tmp_path_factory) -> Path:
    """The protocol tier's tiny model with its fast path compiled, as the launcher prepares it."""
    import joblib

    directory = tmp_path_factory.mktemp("compiled")
    for source in prepared_model.iterdir():
        (directory / source.name).write_bytes(source.read_bytes())
    pipeline = joblib.load(directory / "pipeline.joblib")
    state = compile_into(directory, pipeline, ModelInfo("test://tiny", "tiny", "42", None))
    assert state.compiled, state.reason
    return directory


@pytest.fixture
def fork_servers(tmp_path) -> Iterator[list[ForkServer]]:
    servers: list[ForkServer] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def start_processor(processor_env, fork_servers, tmp_path) -> Iterator[Any]:
    """A record processor whose shard runs in a worker of a fork server started with the same environment. If
    that server cannot start (a bad setting), the processor finds no server and runs the shard itself."""
    started: list[MultiLangDriver] = []

    def start_through_fork_server(**overrides: str) -> MultiLangDriver:
        env = {**processor_env, **overrides}
        try:
            server = start(env, tmp_path / f"server-{len(started)}", timeout=60)
        except RuntimeError:
            env[SOCKET_VARIABLE] = str(tmp_path / f"no-server-{len(started)}.sock")
            processor = MultiLangDriver(env, cwd=REPO_ROOT)
        else:
            fork_servers.append(server)
            processor = MultiLangDriver(env, fork_server=server, cwd=REPO_ROOT)
        started.append(processor)
        return processor

    yield start_through_fork_server
    for processor in started:
        processor.kill()


def test_the_shard_runs_in_a_forked_worker_that_writes_to_the_processors_pipes(start_processor, fork_servers):
    processor = start_processor()
    initialize(processor)
    worker = processor.worker()

    assert worker.pid != processor.process.pid
    assert worker.ppid() == fork_servers[0].process.pid
    # the worker's stderr is ours (read by the driver's thread: wait for the line)
    assert wait_for(
        lambda: any(event.get("event") == "shard_initialized" for event in processor.log_events()), timeout=10
    )
    processor.send({"action": "leaseLost"})
    assert processor.receive() == {"action": "status", "responseFor": "leaseLost"}
    assert processor.exit_code() == 0


def test_sigterm_to_the_processor_ends_the_worker_and_the_processor_dies_of_it(start_processor, fork_servers):
    processor = start_processor()
    initialize(processor)
    worker = processor.worker()

    processor.process.send_signal(signal.SIGTERM)

    assert processor.process.wait(timeout=30) == -signal.SIGTERM
    assert worker.wait(timeout=30) is None or not worker.is_running()


def test_a_killed_processor_takes_its_worker_with_it(start_processor, fork_servers):
    processor = start_processor()
    initialize(processor)
    worker = processor.worker()

    processor.process.kill()
    processor.process.wait(timeout=30)

    psutil.wait_procs([worker], timeout=30)
    assert not worker.is_running()


def test_a_worker_that_exits_1_makes_the_processor_exit_1(start_processor, fork_servers):
    processor = start_processor(PREDICTIONS_STREAM_NAME="no-such-stream")
    initialize(processor)

    process(processor, [record(ride_payload(1), 1)])

    assert processor.receive() is None  # exits without answering
    assert processor.exit_code() == 1
    assert fork_servers[0].process.poll() is None  # the server serves on


def test_stopping_the_server_stops_its_workers_and_their_processors(start_processor, fork_servers):
    processor = start_processor()
    initialize(processor)
    worker = processor.worker()

    fork_servers[0].stop()

    assert processor.process.wait(timeout=30) == -signal.SIGTERM
    assert not worker.is_running()


def test_without_a_server_the_processor_runs_the_shard_itself(processor_env, tmp_path):
    env = {**processor_env, SOCKET_VARIABLE: str(tmp_path / "nobody-listens.sock")}
    processor = MultiLangDriver(env, cwd=REPO_ROOT)
    initialize(processor)

    assert psutil.Process(processor.process.pid).children() == []
    processor.send({"action": "leaseLost"})
    assert processor.receive() == {"action": "status", "responseFor": "leaseLost"}
    assert processor.exit_code() == 0
    assert any(event.get("event") == "fork_server_unavailable" for event in processor.log_events())


def test_on_the_fast_path_neither_a_processor_nor_the_server_loads_sklearn_or_mlflow(
    processor_env, compiled_model, fork_servers, tmp_path
):
    env = {**processor_env, "PREPARED_MODEL_DIR": str(compiled_model)}
    plain = MultiLangDriver({**env, "PYTHONPROFILEIMPORTTIME": "1"}, cwd=REPO_ROOT)
    initialize(plain)
    process(plain, [record(ride_payload(1), 1)])
    server = start(env, tmp_path / "server")
    fork_servers.append(server)

    answer = plain.receive()
    plain.send({**answer, "error": None})
    assert plain.receive() == {"action": "status", "responseFor": "processRecords"}
    assert plain.exit_code() == 0
    imported = {line.split("|")[-1].strip() for line in plain.stderr.splitlines() if line.startswith("import time:")}
    assert "consumer.model.fastpath" in imported and "onnxruntime" in imported
    assert "consumer.model.compile" not in imported, "compiling is the preparing side's job"
    assert not {name for name in imported if name.split(".")[0] in {"sklearn", "scipy", "mlflow", "pandas"}}
    loaded = [event for event in plain.log_events() if event.get("event") == "model_loaded"]
    assert [event["model_path"] for event in loaded] == ["onnx"]
    mapped = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "onnxruntime" in mapped
    assert not any(f"/{package}/" in mapped for package in ("sklearn", "scipy", "mlflow", "pandas"))


def test_a_worker_adds_far_less_memory_than_a_plain_processor(processor_env, compiled_model, fork_servers, tmp_path):
    """Figures are printed, not asserted against a goal: only that the worker shares what the server loaded."""
    env = {**processor_env, "PREPARED_MODEL_DIR": str(compiled_model)}
    server = start(env, tmp_path / "server")
    fork_servers.append(server)
    forked = MultiLangDriver(env, fork_server=server, cwd=REPO_ROOT)
    plain = MultiLangDriver(env, cwd=REPO_ROOT)
    for processor in (forked, plain):
        initialize(processor)
    worker = forked.worker()

    worker_unique = worker.memory_full_info().uss
    plain_unique = psutil.Process(plain.process.pid).memory_full_info().uss
    print(f"USS: forked worker {worker_unique / 1e6:.1f} MB, plain processor {plain_unique / 1e6:.1f} MB")

    assert worker_unique < plain_unique / 2
    for processor in (forked, plain):
        processor.send({"action": "leaseLost"})
        assert processor.receive() == {"action": "status", "responseFor": "leaseLost"}
        assert processor.exit_code() == 0


def test_the_server_exits_when_its_parent_dies(processor_env, tmp_path):
    env = {**processor_env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    code = (
        "import os, sys; from pathlib import Path; from consumer.runtime.forkserver import start;"
        f" server = start(os.environ, Path({str(tmp_path)!r})); print(server.process.pid, flush=True)"
    )
    parent = subprocess.run(
        [os.sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    server = psutil.Process(int(parent.stdout.strip()))

    psutil.wait_procs([server], timeout=30)
    assert not server.is_running()


def request_without_reading_the_reply(server: ForkServer) -> tuple[int, int]:
    """Ask ``server`` for a worker, from a client that cannot read the answer (its receiving side shut down: the
    server's reply fails). The worker's stdin and stdout are pipes this test holds the other ends of: returned as
    (stdin's write end, stdout's read end)."""
    import socket

    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(server.socket_path))
        client.shutdown(socket.SHUT_RD)
        socket.send_fds(client, [b"F"], [stdin_read, stdout_write, null])
    for fd in (stdin_read, stdout_write, null):
        os.close(fd)
    return stdin_write, stdout_read


def ends(stdout_read: int, timeout: float = 30.0) -> bool:
    """Whether every process that holds the write end of this pipe (the worker) has ended within ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if select.select([stdout_read], [], [], left)[0] and not os.read(stdout_read, 65536):
            return True
    return False


def test_a_worker_whose_reply_fails_is_killed(processor_env, fork_servers, tmp_path):
    server = start(processor_env, tmp_path / "server")
    fork_servers.append(server)
    stdin_write, stdout_read = request_without_reading_the_reply(server)

    # Its stdin stays open: the worker would wait for the daemon's first message for ever, and no record processor
    # would ever end it.
    assert ends(stdout_read), "the worker of a failed reply still runs"
    assert server.process.poll() is None  # the server serves on
    os.close(stdin_write)


def test_a_worker_that_ends_while_no_record_processor_is_connected_is_reaped(processor_env, fork_servers, tmp_path):
    server = start(processor_env, tmp_path / "server")
    fork_servers.append(server)
    stdin_write, stdout_read = request_without_reading_the_reply(server)
    os.close(stdin_write)  # whether killed or not, the worker ends now: its stdin is closed
    assert ends(stdout_read)

    deadline = time.monotonic() + 30
    while (zombies := psutil.Process(server.process.pid).children()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert zombies == [], "a worker is left a zombie of the server"


def test_a_worker_holds_no_connection_to_the_server(start_processor, fork_servers):
    processor = start_processor()
    initialize(processor)
    worker = processor.worker()

    sockets = [connection.laddr for connection in worker.net_connections(kind="unix")]

    assert str(fork_servers[0].socket_path) not in sockets  # only the server answers the record processor
    processor.send({"action": "leaseLost"})
    assert processor.receive() == {"action": "status", "responseFor": "leaseLost"}
    assert processor.exit_code() == 0


def versioned_copy(compiled: Path, directory: Path, version: str) -> Path:
    """``compiled`` as another version of the model (its model.json says ``version``)."""
    directory.mkdir(parents=True)
    for source in compiled.iterdir():
        (directory / source.name).write_bytes(source.read_bytes())
    metadata = json.loads((directory / METADATA_FILE).read_text())
    (directory / METADATA_FILE).write_text(json.dumps({**metadata, "version": version}))
    return directory


def test_after_a_publication_a_running_worker_switches_at_its_next_batch_and_new_workers_share_the_new_version(
    processor_env, compiled_model, fork_servers, tmp_path
):
    pointer = tmp_path / "model-current"
    publish(pointer, versioned_copy(compiled_model, tmp_path / "v1", "1"))
    env = {**processor_env, "PREPARED_MODEL_DIR": str(pointer)}
    server = start(env, tmp_path / "server")
    fork_servers.append(server)
    running = MultiLangDriver(env, fork_server=server, cwd=REPO_ROOT)
    initialize(running)

    def batch(processor: MultiLangDriver, sequence: int) -> None:
        process(processor, [record(ride_payload(sequence), sequence)])
        answer_checkpoint(processor)
        assert processor.receive() == {"action": "status", "responseFor": "processRecords"}

    batch(running, 1)
    publish(pointer, versioned_copy(compiled_model, tmp_path / "v2", "2"))
    batch(running, 2)

    def batches_done() -> list[dict[str, Any]] | None:
        done = [event for event in running.log_events() if event.get("event") == "batch_done"]
        return done if len(done) == 2 else None  # its stderr is read in the background

    done = wait_for(batches_done, timeout=30, interval=0.1)
    assert done is not None, running.stderr
    assert [event["model_version"] for event in done] == ["1", "2"]
    [switched] = [event for event in running.log_events() if event.get("event") == "model_switched"]
    assert (switched["previous_version"], switched["model_version"]) == ("1", "2")

    def preloaded_for_a_new_worker() -> dict[str, Any] | None:
        """A new worker's model_loaded line once the server has reloaded (it looks between requests)."""
        fresh = MultiLangDriver(env, fork_server=server, cwd=REPO_ROOT)
        initialize(fresh)
        assert fresh.close() == 0
        loaded = [event for event in fresh.log_events() if event.get("event") == "model_loaded"]
        return loaded[0] if loaded and (loaded[0]["why"], loaded[0]["version"]) == ("preloaded", "2") else None

    assert wait_for(preloaded_for_a_new_worker, timeout=60, interval=0.5)
    assert running.close() == 0
