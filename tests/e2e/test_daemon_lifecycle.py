"""The launcher's life around the real KCL daemon: killed at each step of start-up it leaves nothing behind; a pod
that holds no lease is ready (which pins the daemon's log line readiness waits for); a daemon that gives up on its
own fails the consumer with one line naming why.

A missing input stream takes the daemon 20 initialisation attempts to give up, each after a random wait of 1 to
30 s (several minutes, and not configurable): that consumer is started when this
module starts, and the other tests run while it tries."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from consumer.tools.harness import LOCAL_KCL_PROPERTIES, ConsumerProcess, consumer_env, wait_for
from tests.support.stack import lease_table


def launcher_events(consumer: ConsumerProcess) -> list[dict[str, Any]]:
    events = []
    for line in consumer.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"component":"launcher"' in line.replace(" ", ""):
            events.append(json.loads(line))
    return events


def logged(consumer: ConsumerProcess, event: str) -> bool:
    return any(line.get("event") == event for line in launcher_events(consumer))


def still_running(work_dir: str) -> list[psutil.Process]:
    """Every process of this consumer that still runs: the launcher hands its environment, CONSUMER_WORK_DIR
    included, to everything it starts (the fork server and its workers, the daemon and its record processors)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get("CONSUMER_WORK_DIR") == work_dir:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def describe(processes: list[psutil.Process]) -> str:
    names = []
    for process in processes:
        try:
            names.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            names.append(f"{process.pid} (gone)")
    return "; ".join(names)


STEPS = {
    "preparing the model": "model_preparing",
    "after the fork server starts": "fork_server_started",
    "after the daemon starts": "daemon_started",
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("step", list(STEPS))
def test_a_launcher_killed_at_each_step_of_start_up_leaves_nothing_running(start_consumer, step, signum):
    consumer = start_consumer()
    work_dir = consumer.env["CONSUMER_WORK_DIR"]
    assert wait_for(lambda: logged(consumer, STEPS[step]), timeout=180, interval=0.02), consumer.tail()
    assert consumer.process is not None

    consumer.process.send_signal(signum)
    status = consumer.process.wait(timeout=120)

    if step == "preparing the model":
        assert not logged(consumer, "model_prepared"), "the launcher was not stopped while preparing the model"
    if signum == signal.SIGTERM:
        assert status == 0, consumer.tail()
        assert logged(consumer, "stopped_during_start_up") or logged(consumer, "daemon_stopped"), consumer.tail()
    else:
        assert status == -signal.SIGKILL
    left = wait_for(lambda: not still_running(work_dir), timeout=60)
    assert left, f"still running after the launcher: {describe(still_running(work_dir))}\n{consumer.tail()}"


@pytest.mark.parametrize("fork_server", ["true", "false"], ids=["fork server", "plain processors"])
def test_a_launcher_killed_by_sigkill_while_it_holds_leases_leaves_nothing_running(start_consumer, fork_server):
    consumer = start_consumer(SHARD_FORK_SERVER=fork_server)
    work_dir = consumer.env["CONSUMER_WORK_DIR"]

    def processors() -> list[psutil.Process]:
        return [process for process in still_running(work_dir) if "record_processor.py" in describe([process])]

    assert wait_for(lambda: len(processors()) == 2, timeout=180, interval=1), consumer.tail()  # one per shard
    assert consumer.process is not None

    consumer.process.kill()
    consumer.process.wait(timeout=60)

    left = wait_for(lambda: not still_running(work_dir), timeout=60)
    assert left, f"still running after the launcher: {describe(still_running(work_dir))}\n{consumer.tail()}"


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_a_pod_that_holds_no_lease_is_ready(local_stack, start_consumer):
    """Two pods, one shard: one of them holds no lease, and must be ready all the same. Readiness waits for the
    daemon's own "Initialization complete" line: if a KCL upgrade changes it, this fails.

    Both pods may race for the one lease at first (on a loaded machine a lease can also expire and move), so the
    test waits for a moment at which the lease has one owner, the other pod runs no record processor, and that
    pod answers ready."""
    stream = f"one-shard-{uuid.uuid4().hex[:8]}"
    local_stack.create_stream(stream, 1)
    pods = {worker: start_consumer(worker, INPUT_STREAM_NAME=stream) for worker in ("worker-1", "worker-2")}

    def ready() -> bool:
        return all((url := pod.metrics_url()) is not None and get(url + "/readyz") == 200 for pod in pods.values())

    assert wait_for(ready, timeout=240, interval=1), "\n".join(pod.tail() for pod in pods.values())
    table = pods["worker-1"].env["KCL_APPLICATION_NAME"]

    def owner() -> str:
        owners = [lease["owner"] for lease in lease_table(local_stack, table).values()]
        return owners[0] if len(owners) == 1 and owners[0] in pods else ""

    def an_idle_pod_is_ready() -> bool:
        holder = owner()
        if not holder:
            return False
        [idle] = [pod for worker, pod in pods.items() if worker != holder]
        assert idle.process is not None  # both pods share a work dir: tell their processes apart by ancestry
        processors = [
            p
            for p in psutil.Process(idle.process.pid).children(recursive=True)
            if "record_processor.py" in describe([p])
        ]
        answered = get(idle.metrics_url() + "/readyz") == 200
        return not processors and answered and owner() == holder  # and the lease did not move while we looked

    assert wait_for(an_idle_pod_is_ready, timeout=120, interval=2), lease_table(local_stack, table)
    assert all(logged(pod, "daemon_initialized") for pod in pods.values())


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


def daemon_exit(consumer: ConsumerProcess, timeout: float) -> dict[str, Any]:
    """Wait for the consumer to end by itself; return its launcher's daemon_exited line."""
    assert consumer.process is not None
    assert wait_for(lambda: consumer.process.poll() is not None, timeout=timeout, interval=2), consumer.tail()
    [line] = [event for event in launcher_events(consumer) if event.get("event") == "daemon_exited"]
    return line


def test_an_unreachable_lease_table_fails_the_consumer_naming_the_cause(start_consumer):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    consumer = start_consumer(AWS_ENDPOINT_URL_DYNAMODB=endpoint)

    line = daemon_exit(consumer, timeout=420)

    assert consumer.process is not None and consumer.process.returncode != 0
    assert (line["level"], line["requested"]) == ("error", False)
    assert "Connection refused" in line["cause"] and endpoint.removeprefix("http://") in line["cause"], line


@pytest.fixture(scope="module", autouse=True)
def missing_stream_consumer(local_stack, registered_model, tmp_path_factory) -> Iterator[ConsumerProcess]:
    """A consumer of a stream that does not exist, started before the module's first test (see the docstring)."""
    work_dir: Path = tmp_path_factory.mktemp("missing-stream")
    suffix = uuid.uuid4().hex[:8]
    for name in (f"predictions-{suffix}", f"dead-letters-{suffix}"):
        local_stack.create_stream(name, 1)
    env = consumer_env(
        local_stack.env(),
        input_stream=f"no-such-stream-{suffix}",
        predictions_stream=f"predictions-{suffix}",
        dead_letter_stream=f"dead-letters-{suffix}",
        model_uri=registered_model.uri,
        tracking_uri=registered_model.tracking_uri,
        application_name=f"missing-{suffix}",
        work_dir=work_dir,
        extra={"KCL_EXTRA_PROPERTIES": LOCAL_KCL_PROPERTIES},
    )
    consumer = ConsumerProcess(env, work_dir / "consumer.log").start()
    yield consumer
    if consumer.running():
        consumer.stop(timeout=60)


@pytest.mark.timeout(1200)
def test_a_missing_input_stream_fails_the_consumer_naming_the_stream(missing_stream_consumer):
    consumer = missing_stream_consumer

    line = daemon_exit(consumer, timeout=1100)  # 20 attempts of at most ~32 s each, whenever this test starts

    assert consumer.process is not None and consumer.process.returncode != 0
    assert (line["level"], line["requested"]) == ("error", False)
    assert consumer.env["INPUT_STREAM_NAME"] in line["cause"], line
