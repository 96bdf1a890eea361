"""The shipped image, built from the real Dockerfile and run the way production runs it: read-only root filesystem,
uid 10001, writable mounts only at /tmp, the model cache and the Prometheus folder, against the local emulators
(``--network=host``). Rides in, predictions out, /metrics answering; then ``podman stop`` drains cleanly."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.tools.harness import LOCAL_KCL_PROPERTIES, POISON_RECORDS, wait_for
from consumer.tools.localstack import free_port
from consumer.tools.paths import DEFAULT_TRIPS
from consumer.tools.replay import put_payloads, replay
from consumer.tools.tail import read_all
from tests.container.conftest import FIGURES, REPORT
from tests.support.probes import http_get, json_lines
from tests.support.stack import Streams, lease_table

UID = 10001
#: The writable paths of the image (see the Dockerfile); everything else is read-only.
WRITABLE = ("/tmp", "/var/lib/consumer/model", "/var/lib/consumer/prometheus")
STOP_TIMEOUT = 60  # > shutdownGraceMillis (20 s) + one batch; podman kills after it (the exit status shows it)
#: The input stream's shards, all leased by the one container: the pod's memory is measured at this many.
SHARDS = 3


def run_args(name: str, image: str, env: dict[str, str], read_only_mounts: list[str]) -> list[str]:
    # No --user: the image's own USER is under test.
    args = ["run", "--detach", "--name", name, "--network=host", "--read-only"]
    args += ["--stop-timeout", str(STOP_TIMEOUT)]
    for path in WRITABLE:
        args += ["--tmpfs", path]
    for path in read_only_mounts:
        args += ["--volume", f"{path}:{path}:ro"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    return [*args, image]


def container_processes(podman, name: str) -> list[psutil.Process]:
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def metric_values(text: str) -> dict[str, float]:
    """Each sample name of a /metrics page with its values summed over the labels."""
    values: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] += sample.value
    return values


def test_image_without_settings_stops_naming_the_missing_variable(podman, image):
    result = podman("run", "--rm", "--read-only", image, check=False, timeout=60)
    assert result.returncode != 0
    assert "INPUT_STREAM_NAME" in result.stderr + result.stdout


def test_container_scores_rides_read_only_as_uid_10001_and_drains_on_podman_stop(
    podman, image, model_store, registry_url, local_stack, trips_file, tmp_path
):
    streams = Streams.create(local_stack, input_shards=SHARDS)
    suffix = uuid.uuid4().hex[:8]
    kinesis = local_stack.kinesis_client()
    application = f"container-{suffix}"
    name = f"consumer-{suffix}"
    metrics_port = free_port()

    first = replay(trips_file, client=kinesis, stream_name=streams.input, limit=1000, skip_invalid=True, progress=False)
    put_payloads(kinesis, streams.input, POISON_RECORDS)
    expected = first.records_sent + len(POISON_RECORDS)

    env = {
        **local_stack.env(),
        **streams.env(),
        "KCL_APPLICATION_NAME": application,
        "KCL_INITIAL_POSITION": "TRIM_HORIZON",
        "KCL_WORKER_ID": name,
        "KCL_IDLE_TIME_BETWEEN_READS_MS": "250",
        "KCL_EXTRA_PROPERTIES": LOCAL_KCL_PROPERTIES,
        "MODEL_URI": model_store.uri,
        "MLFLOW_TRACKING_URI": registry_url,
        "METRICS_PORT": str(metrics_port),
    }
    started = time.monotonic()
    podman(*run_args(name, image, env, [str(model_store.store.directory)]))
    try:
        ready = wait_for(
            lambda: (
                http_get(f"http://127.0.0.1:{metrics_port}/readyz")[0] == 200
                or podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true"
            ),
            timeout=240,
            interval=0.5,
        )
        ready_seconds = time.monotonic() - started
        assert ready, f"the container never became ready; log:\n{podman('logs', name, check=False).stderr[-6000:]}"
        FIGURES["start -> ready (/readyz 200)"] = f"{ready_seconds:.0f} s"
        outputs = wait_for(
            lambda: (
                len(read_all(kinesis, streams.predictions, timeout=1))
                + len(read_all(kinesis, streams.dead_letters, timeout=1))
                >= expected
                or podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true"
            ),
            timeout=240,
            interval=2,
        )
        logs = podman("logs", name, check=False).stderr
        assert outputs, f"not every record came out in time; container log:\n{logs[-6000:]}"
        predictions = read_all(kinesis, streams.predictions, timeout=5)
        dead_letters = read_all(kinesis, streams.dead_letters, timeout=5)
        assert len(predictions) == first.records_sent, f"container log:\n{logs[-6000:]}"
        assert sorted(item.event["prediction"]["ride_id"] for item in predictions) == sorted(first.ground_truth)
        assert {item.event["version"] for item in predictions} == {model_store.version}
        assert len(dead_letters) == len(POISON_RECORDS)
        first_wave_seconds = time.monotonic() - started
        FIGURES["start -> every record of the first wave out"] = f"{first_wave_seconds:.0f} s"

        # The memory at SHARDS leased shards: every lease held by this container, a processor running for each.
        leases = lease_table(local_stack, application)
        assert len(leases) == SHARDS and {lease["owner"] for lease in leases.values()} == {name}, leases
        processes = container_processes(podman, name)
        assert {process.uids().real for process in processes} == {UID}
        memory = memory_by_role(processes)
        assert len(memory["record_processor"]) == SHARDS, memory
        cgroup = memory_cgroup(processes[0].pid)
        FIGURES.update(memory_figures(memory, cgroup))
        REPORT["pod"] = {
            "shards": SHARDS,
            "start_to_ready_seconds": round(ready_seconds, 1),
            "start_to_first_wave_out_seconds": round(first_wave_seconds, 1),
            "records_in_first_wave": expected,
            "memory_mib": {
                role: [[round(rss, 1), round(pss, 1)] for rss, pss in values] for role, values in memory.items()
            },
            "launcher_rss_mib": round(memory["launcher"][0][0], 1),
            "pss_sum_mib": round(sum(pss for values in memory.values() for _, pss in values), 1),
            **cgroup_memory(cgroup),
        }

        status, health = http_get(f"http://127.0.0.1:{metrics_port}/healthz")
        assert status == 200, health
        status, ready = http_get(f"http://127.0.0.1:{metrics_port}/readyz")
        assert status == 200, ready
        healthcheck = podman("healthcheck", "run", name, check=False)  # the image's HEALTHCHECK, for docker run
        assert healthcheck.returncode == 0, healthcheck.stdout + healthcheck.stderr
        status, text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        metrics = metric_values(text)
        assert metrics["ride_consumer_predictions_written_total"] == first.records_sent
        assert metrics["ride_consumer_records_received_total"] == expected
        assert metrics["ride_consumer_daemon_up"] == 1

        # A second wave, and the stop while it is being consumed: the drain must checkpoint what was written.
        replay(
            trips_file,
            client=kinesis,
            stream_name=streams.input,
            limit=1000,
            skip_rows=5000,
            start_ride_id=100_001,
            skip_invalid=True,
            progress=False,
        )
        wait_for(lambda: len(read_all(kinesis, streams.predictions, timeout=1)) > first.records_sent, timeout=60)
    finally:
        stopping = time.monotonic()
        podman("stop", "--time", str(STOP_TIMEOUT), name, check=False, timeout=STOP_TIMEOUT + 30)
        FIGURES["podman stop (drain)"] = f"{time.monotonic() - stopping:.1f} s"
        if "pod" in REPORT:
            REPORT["pod"]["stop_seconds"] = round(time.monotonic() - stopping, 1)
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        logs = podman("logs", name, check=False).stderr
        podman("rm", "--force", name, check=False)
        log_path = tmp_path / "container.log"
        log_path.write_text(logs)
        FIGURES["container log"] = str(log_path)

    assert state["ExitCode"] == 0, f"exit status {state['ExitCode']} after podman stop; log:\n{logs[-6000:]}"
    events = json_lines(logs)
    assert any(event.get("event") == "daemon_stopped" for event in events), logs[-6000:]

    # Checkpoint at the last written record: per shard, the lease's checkpoint is the highest input sequence
    # number whose prediction or dead letter is on an output stream.
    written: dict[str, int] = defaultdict(int)
    out = [*read_all(kinesis, streams.predictions, timeout=5), *read_all(kinesis, streams.dead_letters, timeout=5)]
    for item in out:
        shard, sequence, _ = item.event["event_id"].split(":")
        written[shard] = max(written[shard], int(sequence))
    checkpoints = {shard: lease["checkpoint"] for shard, lease in lease_table(local_stack, application).items()}
    assert {shard: int(sequence) for shard, sequence in checkpoints.items()} == dict(written)
    shutdowns = [event for event in events if event.get("event") == "shutdown_requested"]
    assert len(shutdowns) == len(checkpoints), "every shard the container held was told to shut down"


def role(process: psutil.Process) -> str:
    """A short name for a process of the container: tini, daemon (java), launcher, record_processor, ..."""
    command = process.cmdline()
    if not command:
        return process.name()
    program = Path(command[0]).name
    if program == "java":
        return "daemon (java)"
    if program.startswith("python"):
        if command[1:3] == ["-m", "consumer"]:
            return "launcher" if command[3:4] == ["run"] else f"consumer {' '.join(command[3:4])}"
        if len(command) > 2 and command[1] == "-m":
            return command[2]
        return Path(command[1]).stem if len(command) > 1 else program
    return program


def memory_by_role(processes: list[psutil.Process]) -> dict[str, list[tuple[float, float]]]:
    """RSS and PSS in MiB (PSS: shared pages split between the processes that map them) of each process, by role."""
    by_role: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for process in processes:
        memory = process.memory_full_info()
        by_role[role(process)].append((memory.rss / 2**20, memory.pss / 2**20))
    return dict(sorted(by_role.items()))


def memory_figures(by_role: dict[str, list[tuple[float, float]]], cgroup: Path | None) -> dict[str, str]:
    """The per-role memory, its PSS sum and the container's memory cgroup, as summary lines."""
    figures = {
        f"memory {name} (x{len(values)})": "RSS "
        + " / ".join(f"{rss:.0f}" for rss, _ in values)
        + " MiB, PSS "
        + " / ".join(f"{pss:.0f}" for _, pss in values)
        + " MiB"
        for name, values in by_role.items()
    }
    figures["memory container, PSS sum"] = f"{sum(pss for values in by_role.values() for _, pss in values):.0f} MiB"
    usage = cgroup_memory(cgroup)
    if usage:
        figures["memory container cgroup, working set / peak"] = (
            f"{usage['cgroup_working_set_mib']:.0f} / {usage['cgroup_peak_mib']:.0f} MiB"
        )
    return figures


def cgroup_memory(cgroup: Path | None) -> dict[str, float]:
    """The container's memory cgroup: the working set (what the kubelet compares with the limit) and the peak, MiB."""
    if cgroup is None:
        return {}
    stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
    usage = int((cgroup / "memory.usage_in_bytes").read_text())
    working_set = usage - int(stat.get("total_inactive_file", 0))
    peak = int((cgroup / "memory.max_usage_in_bytes").read_text())
    return {"cgroup_working_set_mib": round(working_set / 2**20, 1), "cgroup_peak_mib": round(peak / 2**20, 1)}


def memory_cgroup(pid: int) -> Path | None:
    """The cgroup v1 memory folder of a process, where this machine exposes it (None elsewhere)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        if "memory" in controllers.split(",") and (folder / "memory.max_usage_in_bytes").exists():
            return folder
    return None


@pytest.fixture(autouse=True)
def _no_leftover_containers(podman):
    yield
    leftovers = podman("ps", "--all", "--quiet", "--filter", "name=consumer-", check=False).stdout.split()
    if leftovers:
        podman("rm", "--force", *leftovers, check=False)


def test_the_same_image_serves_the_web_endpoint_and_scores_a_month_file(
    podman, image, model_store, registry_url, tmp_path
):
    """`serve` and `score` from the image, read-only as uid 10001, on the model the consumer scores with."""
    import pyarrow.parquet as pq

    suffix = uuid.uuid4().hex[:8]
    name = f"consumer-web-{suffix}"
    port = free_port()
    model_env = {"MODEL_URI": model_store.uri, "MLFLOW_TRACKING_URI": registry_url}
    env = {**model_env, "SERVE_HOST": "127.0.0.1", "SERVE_PORT": str(port)}
    podman(*run_args(name, image, env, [str(model_store.store.directory)]), "serve")
    try:
        ready = wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=180, interval=1)
        logs = podman("logs", name, check=False).stderr
        assert ready, f"serve did not become ready; log:\n{logs[-6000:]}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict",
            data=b'{"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}',
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        assert set(answer) == {"duration", "model_version"} and answer["model_version"] == model_store.version
        assert {process.uids().real for process in container_processes(podman, name)} == {UID}
        healthcheck = podman("healthcheck", "run", name, check=False)  # the image's HEALTHCHECK covers serve too
        assert healthcheck.returncode == 0, healthcheck.stdout + healthcheck.stderr
    finally:
        podman("stop", "--time", "30", name, check=False, timeout=60)
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        logs = podman("logs", name, check=False).stderr
        podman("rm", "--force", name, check=False)
    assert state["ExitCode"] == 0, f"exit status {state['ExitCode']} after podman stop; log:\n{logs[-6000:]}"

    source = Path(DEFAULT_TRIPS)
    output = tmp_path / "scored"
    output.mkdir()
    output.chmod(0o777)  # written by uid 10001
    args = ["run", "--rm", "--network=host", "--read-only"]
    for path in WRITABLE:
        args += ["--tmpfs", path]
    store = model_store.store.directory
    args += ["--volume", f"{store}:{store}:ro", "--volume", f"{source.parent}:/input:ro"]
    args += ["--volume", f"{output}:/output"]
    for key, value in model_env.items():
        args += ["--env", f"{key}={value}"]
    done = podman(
        *args,
        image,
        "score",
        "--input",
        f"/input/{source.name}",
        "--output",
        "/output/p.parquet",
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    assert "scored" in done.stdout and pq.read_table(output / "p.parquet").num_rows == pq.read_metadata(source).num_rows
