"""The shipped benchmark runs from the command line in its quick mode and reports every section.

Only the shape of the report is checked, never a figure: timings depend on the machine and on its load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from consumer.tools.bench.run import SECTIONS
from consumer.tools.paths import REPO_ROOT

# The benchmark reads the TLC file beside the repository; without it, it would download NYC TLC's public copy.
pytestmark = pytest.mark.usefixtures("trips_file")


def test_quick_bench_writes_every_section_and_prints_the_table(tmp_path):
    output = tmp_path / "bench.json"

    done = subprocess.run(
        [sys.executable, "-m", "consumer", "bench", "--quick", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(output.read_text())
    assert list(report) == list(SECTIONS)
    assert report["model"]["model_path"] == "onnx"
    assert {"rides", "max_abs_diff_minutes", "tolerance_minutes"} <= report["model"]["agreement"].keys()
    lambda_keys = {"rides_per_second", "rides_per_second_without_put", "predict_ms_per_ride"}
    assert lambda_keys <= report["lambda_baseline"].keys()
    assert lambda_keys <= report["lambda_baseline"]["seed_n_jobs_all_cores"].keys()
    for variant in ("onnx_null_sink", "onnx_emulator", "sklearn_null_sink", "sklearn_emulator"):
        assert {"rides_per_second", "rides_per_cpu_second", "runs"} <= report["processor"][variant].keys()
    assert [row["max_records"] for row in report["batch_size"]] == [100, 1_000, 10_000]
    assert [row["shards"] for row in report["shards"]] == [1, 2]
    assert {"fork_server_emulator", "plain_process_emulator", "fork_server_null_sink", "plain_process_null_sink"} <= (
        report["cold_start"].keys()
    )
    daemon = report["daemon"]["fork_server"]
    assert daemon["latency_ms"]["200"]["count"] > 0
    assert len(daemon["memory"]["workers"]) == len(daemon["memory"]["record_processors"]) == 2
    assert {"uss_mb", "pss_mb", "rss_mb"} <= daemon["per_shard"].keys()
    assert set(daemon["initialize_to_first_prediction_seconds"]) == {"shardId-000000000000", "shardId-000000000001"}
    assert set(daemon["lease_to_first_prediction_seconds"]) == {"shardId-000000000000", "shardId-000000000001"}
    for step in ("lease_to_shard_consumer_seconds", "lease_to_initialize_sent_seconds", "lease_to_initialize_seconds"):
        assert step in daemon
    assert len(daemon["latency_percentiles_ms"]["200"]) == 101
    cpu = daemon["pod_cpu"]
    roles = {"launcher", "daemon", "jit", "fork_server", "record_processors", "workers"}
    assert cpu["idle"]["processes"] == {
        "launcher": 1,
        "daemon": 1,
        "fork_server": 1,
        "record_processors": 2,
        "workers": 2,
    }
    assert set(cpu["idle"]["ms_per_second"]) == roles | {"pod"}
    assert cpu["phases"][0]["rate"] == 200 and {"put_rate", "drain_seconds", "sustained"} <= cpu["phases"][0].keys()
    for window in cpu["rates"].values():
        assert window["rides"] > 0 and window["cpu_seconds"]["daemon"] > 0 and window["cpu_seconds"]["workers"] > 0
        assert set(window["ms_per_1000_rides_above_idle"]) == roles | {"pod"}
    limit = daemon["write_limit"]
    assert (
        limit["settings"]["KCL_MAX_RECORDS"] == "1000" and limit["settings"]["KCL_IDLE_TIME_BETWEEN_READS_MS"] == "1000"
    )
    assert limit["warmup_rides"] + limit["batch_records"] >= 16_000 and limit["batches"] >= 3 * limit["shards"]
    assert 0 < limit["window"]["rides"] < limit["batch_records"]
    assert limit["window"]["cpu_seconds"]["daemon"] > 0 and limit["window"]["cpu_seconds"]["workers"] > 0
    assert limit["settings"]["BENCH_DISCARD_OUTPUT"] == "true" and limit["put_ms_per_1000_rides"] > 0
    assert {"shards_per_core", "daemon_share_of_a_shard"} <= limit["shards_per_core"].keys()
    # A second pod, idle with more shards leased, splits the daemon's idle cost; the parts add up to the first.
    more = limit["more_shards_idle"]
    assert more["shards"] > limit["shards"] and more["processes"]["workers"] == more["shards"]
    split = limit["daemon_idle_split"]
    assert split["fixed_ms_per_second"] + split["per_shard_ms_per_second"] * limit["shards"] == pytest.approx(
        limit["idle"]["ms_per_second"]["daemon"], abs=0.02
    )
    assert limit["shards_per_core"]["daemon_fixed_ms_per_second"] == split["fixed_ms_per_second"]
    # The JVM is still compiling its hot code this soon after it started: the warmed figure leaves that out.
    assert limit["window"]["cpu_seconds"]["jit"] > 0
    assert limit["shards_per_core_jit_included"]["shards_per_core"] < limit["shards_per_core"]["shards_per_core"]
    batch = report["batch"]
    assert batch["sizes"]["x1"]["rows"] > 0 and batch["rows_per_cpu_second"] > 0
    web = report["web"]
    assert web["fixed_rate"]["200"]["requests"] > 0
    assert {"p50", "p90", "p99", "max"} <= web["fixed_rate"]["200"]["latency_ms"].keys()
    assert web["lists"]["requests"] > 0 and web["ceiling"]["requests"] > 0
    assert len(web["memory"]["workers"]) == web["workers"]
    assert all({"figure", "value", "goal", "met"} <= goal.keys() for goal in report["goals"])
    assert "| Goal | Measured | Target | Met |" in done.stdout
    assert any(goal["figure"].startswith("shards at 1,000 rides/s per core") for goal in report["goals"])
    for chart in ("latency", "cpu", "memory"):
        assert (tmp_path / f"bench-{chart}.png").read_bytes().startswith(b"\x89PNG")
