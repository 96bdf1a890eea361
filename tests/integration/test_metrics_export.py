"""Metrics across processes and the launcher's HTTP endpoints, with real shard-like processes writing to a
multiprocess folder and a real HTTP server on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.runtime.health import HealthServer, LauncherState
from consumer.runtime.metrics import scrape_registry
from consumer.runtime.metricsfolder import MetricsFolder
from consumer.runtime.settings import load_settings
from consumer.tools.paths import REPO_ROOT

#: A shard process in miniature: the processor's meter, in multiprocess mode, until its stdin closes.
SHARD_PROCESS = """
import sys, time
from consumer.pipeline.meter import ShardMetrics
shard, records, stuck = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "stuck"
meter = ShardMetrics.create().for_shard(shard)
meter.lease_gained()
meter.batch_received(records, 4000)
meter.batch_done(predictions=records - 1, dead_letter_reasons=["not_json"], newest_arrival_millis=1_700_000_000_000,
                 seconds=0.2)
if stuck:
    meter.metrics.busy_since.labels(shard).set(time.time() - 1000)
print("ready", flush=True)
sys.stdin.read()
"""


class ShardProcess:
    def __init__(self, folder: Path, shard: str, records: int, *, stuck: bool = False) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SHARD_PROCESS, shard, str(records), "stuck" if stuck else "ok"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdout.readline() == "ready\n"

    def exit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "metrics"
    path.mkdir()
    return path


@pytest.fixture
def shard_processes(folder) -> Iterator[list[ShardProcess]]:
    started: list[ShardProcess] = []
    yield started
    for shard in started:
        if shard.process.poll() is None:
            shard.process.kill()
            shard.process.wait()


def samples(folder: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in scrape_registry(MetricsFolder(folder)).collect()
        for sample in family.samples
    }


def shard(shard_id: str, **labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"shard_id": shard_id, **labels}.items()))


def test_counts_survive_a_shard_process_that_exits_and_its_lease_and_lag_leave_with_it(folder, shard_processes):
    first = ShardProcess(folder, "shardId-000000000000", 100)
    shard_processes.append(first)
    shard_processes.append(ShardProcess(folder, "shardId-000000000001", 50))
    seen = samples(folder)
    assert seen["ride_consumer_leases_held", shard("shardId-000000000000")] == 1
    assert seen["ride_consumer_seconds_behind_latest", shard("shardId-000000000000")] == 4.0

    first.exit()  # without mark_process_dead: the exporter notices the pid is gone
    # the shard moves: a new process takes it and processes more
    shard_processes.append(ShardProcess(folder, "shardId-000000000000", 30))
    seen = samples(folder)
    assert seen["ride_consumer_records_received_total", shard("shardId-000000000000")] == 130
    assert seen["ride_consumer_predictions_written_total", shard("shardId-000000000000")] == 128
    assert seen["ride_consumer_dead_letters_total", shard("shardId-000000000000", reason="not_json")] == 2
    assert seen["ride_consumer_records_received_total", shard("shardId-000000000001")] == 50
    assert seen["ride_consumer_leases_held", shard("shardId-000000000000")] == 1  # the new process only

    for process in shard_processes[1:]:
        process.exit()
    seen = samples(folder)
    assert ("ride_consumer_leases_held", shard("shardId-000000000000")) not in seen
    assert ("ride_consumer_seconds_behind_latest", shard("shardId-000000000001")) not in seen
    assert seen["ride_consumer_records_received_total", shard("shardId-000000000000")] == 130


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def server(folder) -> Iterator[tuple[HealthServer, LauncherState]]:
    state = LauncherState(folder, stuck_after_seconds=180)
    health = HealthServer(state, "127.0.0.1", 0).start()
    yield health, state
    health.stop()


@pytest.fixture
def daemon() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in for the KCL daemon's process: something that runs until killed."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


def test_readyz_waits_for_the_model_and_the_daemons_initialisation(server, daemon):
    health, state = server
    base = f"http://127.0.0.1:{health.port}"
    status, body = get(base + "/readyz")
    assert status == 503
    assert orjson.loads(body) == {
        "status": "fail",
        "checks": ["the model is not prepared yet", "the daemon is not started yet"],
    }
    assert get(base + "/healthz")[0] == 200  # starting is alive

    state.model_prepared({"name": "ride-duration", "version": "3", "uri": "models:/ride-duration@production"}, 2.0)
    state.daemon_started(daemon)
    status, body = get(base + "/readyz")
    assert (status, orjson.loads(body)["checks"]) == (503, ["the daemon is initialising (lease table, shard sync)"])

    state.daemon_initialized = True
    status, body = get(base + "/readyz")
    assert (status, orjson.loads(body)) == (
        200,
        {"status": "ok", "checks": ["model version 3 prepared", "the daemon has initialised"]},
    )

    daemon.kill()
    daemon.wait()
    assert get(base + "/readyz")[0] == 503
    status, body = get(base + "/healthz")
    assert (status, orjson.loads(body)["checks"]) == (503, ["the daemon has exited"])


def test_healthz_fails_while_a_processor_is_stuck_inside_a_call(server, daemon, folder, shard_processes):
    health, state = server
    state.daemon_started(daemon)
    base = f"http://127.0.0.1:{health.port}"
    shard_processes.append(ShardProcess(folder, "shardId-000000000000", 10))
    assert get(base + "/healthz")[0] == 200

    stuck = ShardProcess(folder, "shardId-000000000001", 10, stuck=True)
    shard_processes.append(stuck)
    status, body = get(base + "/healthz")
    assert status == 503
    [problem] = orjson.loads(body)["checks"]
    assert problem.startswith("the processor of shardId-000000000001 has been inside one call for 10")
    assert problem.endswith(" s (limit 180 s, the daemon's timeoutInSeconds)")

    stuck.process.kill()  # the daemon replaces a dead processor; a dead one is not stuck
    stuck.process.wait()
    assert get(base + "/healthz")[0] == 200


def test_metrics_serves_every_shard_process_and_the_launcher(server, daemon, folder, shard_processes):
    health, state = server
    state.model_prepared({"name": "ride-duration", "version": "3", "uri": "models:/ride-duration@production"}, 2.0)
    state.daemon_started(daemon)
    shard_processes.append(ShardProcess(folder, "shardId-000000000000", 10))
    shard_processes.append(ShardProcess(folder, "shardId-000000000001", 20))
    status, body = get(f"http://127.0.0.1:{health.port}/metrics")
    assert status == 200
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    assert values["ride_consumer_records_received_total", shard("shardId-000000000000")] == 10
    assert values["ride_consumer_records_received_total", shard("shardId-000000000001")] == 20
    assert values["ride_consumer_daemon_up", ()] == 1
    model = (("name", "ride-duration"), ("uri", "models:/ride-duration@production"), ("version", "3"))
    assert values["ride_consumer_model_info", model] == 1
    assert get(f"http://127.0.0.1:{health.port}/other")[0] == 404


def test_a_metrics_port_already_taken_stops_start_up_naming_the_setting(env_settings, folder):
    import socket

    from consumer.errors import DaemonSetupError
    from consumer.runtime.launcher import _start_health_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env_settings.setenv("METRICS_HOST", "127.0.0.1")
        env_settings.setenv("METRICS_PORT", str(taken.getsockname()[1]))
        with pytest.raises(DaemonSetupError, match=r"METRICS_PORT=\d+: cannot serve metrics on 127.0.0.1"):
            _start_health_server(load_settings(), LauncherState(folder))


@pytest.fixture
def env_settings(monkeypatch):
    from tests.unit.conftest import REQUIRED

    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch
