"""The launcher's side of observability without processes or sockets: its metrics, the daemon-output relay, the
metrics settings and the multiprocess folder's cleanup."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from consumer.errors import SettingsError
from consumer.runtime.daemonlog import INITIALIZED_MARKER, DaemonOutput
from consumer.runtime.health import LauncherState
from consumer.runtime.metrics import LauncherCollector
from consumer.runtime.metricsfolder import MetricsFolder
from consumer.runtime.settings import load_settings


class Exited:
    """What the launcher holds of a daemon that has exited (subprocess.Popen.poll() returns its status)."""

    def poll(self) -> int:
        return 1


def launcher_metrics(state: LauncherState) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(LauncherCollector(state))
    text = generate_latest(registry).decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_the_launcher_reports_the_model_the_daemon_and_readiness(tmp_path):
    state = LauncherState(tmp_path, clock=lambda: 1_800_000_000.0)
    before = launcher_metrics(state)
    assert before == {  # no model info before it exists
        "ride_consumer_model_alias_refused": 0.0,
        "ride_consumer_model_refresh_failures_total": 0.0,
        "ride_consumer_daemon_up": 0.0,
        "ride_consumer_ready": 0.0,
    }

    state.model_prepared({"name": "ride-duration", "version": "3", "uri": "models:/ride-duration@production"}, 4.25)
    state.daemon_started(Exited())
    after = launcher_metrics(state)
    info = 'ride_consumer_model_info{name="ride-duration",uri="models:/ride-duration@production",version="3"}'
    assert after[info] == 1.0
    assert after["ride_consumer_model_load_duration_seconds"] == 4.25
    assert after["ride_consumer_daemon_start_time_seconds"] == 1_800_000_000.0
    assert after["ride_consumer_model_published_timestamp_seconds"] == 1_800_000_000.0
    assert after["ride_consumer_daemon_up"] == 0.0  # it has exited


def test_the_relay_copies_json_lines_wraps_the_rest_and_notices_initialisation(tmp_path):
    state = LauncherState(tmp_path)
    processor_line = b'{"event":"batch_done","level":"info","shard_id":"shardId-000000000000"}\n'
    daemon_line = (
        b'{"timestamp":"2026-01-01T00:00:00.000Z","level":"info","component":"kcl","logger":"s.a.k.c.Scheduler",'
        b'"thread":"main","event":"' + INITIALIZED_MARKER + b'. Starting worker loop.","exception":""}\n'
    )
    jvm_line = b'OpenJDK 64-Bit Server VM warning: "quoted"\n'
    out = io.BytesIO()
    relay = DaemonOutput(io.BytesIO(processor_line + jvm_line + daemon_line), out, state.daemon_initialized_now)
    relay.start()
    relay.join(timeout=10)

    lines = out.getvalue().splitlines(keepends=True)
    assert lines[0] == processor_line and lines[2] == daemon_line  # verbatim, once each
    wrapped = orjson.loads(lines[1])
    assert wrapped["event"] == 'OpenJDK 64-Bit Server VM warning: "quoted"'
    assert (wrapped["component"], wrapped["unstructured"]) == ("kcl", True)
    assert state.daemon_initialized


def test_the_relay_does_not_call_the_daemon_initialised_before_it_says_so(tmp_path):
    state = LauncherState(tmp_path)
    starting = io.BytesIO(b'{"event":"Initializing LeaseCoordinator attempt 1"}\n')
    DaemonOutput(starting, io.BytesIO(), state.daemon_initialized_now).start().join(timeout=10)
    assert not state.daemon_initialized


def test_emptying_the_metrics_folder_removes_only_metric_files(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"x")
    (folder / "gauge_livemax_123.db").write_bytes(b"x")
    (folder / "counter_compacted.db").write_bytes(b"x")
    (folder / "notes.txt").write_text("not ours")
    MetricsFolder(folder).empty()
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]
    MetricsFolder(tmp_path / "new").empty()
    assert (tmp_path / "new").is_dir()


def test_the_metrics_port_defaults_to_9404_and_a_bad_one_is_named(env):
    settings = load_settings()
    assert settings.metrics_port == 9404
    assert settings.prometheus_multiproc_dir == Path("/tmp/consumer-metrics")
    env.setenv("METRICS_PORT", "70000")
    with pytest.raises(SettingsError, match="METRICS_PORT"):
        load_settings()
