"""The harness the demo, the benchmark and the tests share: the consumer as a subprocess against the local stack.

- :func:`consumer_env`: the environment of ``python -m consumer run`` against a :class:`~consumer.tools.localstack.
  LocalStack`;
- :class:`ConsumerProcess`: that command as a subprocess, its output in a log file, stopped gracefully or killed
  as a lost node would be (the daemon creates its lease table itself);
- :func:`ensure_model`: the seed's model, trained and registered in a local MLflow store once;
- :data:`POISON_RECORDS`, one record of each kind the processor must set aside; :func:`wait_for`;
  :func:`metrics_summary`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from consumer.tools.paths import DEFAULT_TRIPS

if TYPE_CHECKING:
    from prometheus_client.samples import Sample

__all__ = [
    "LOCAL_KCL_PROPERTIES",
    "MODEL_ALIAS",
    "MODEL_NAME",
    "POISON_RECORDS",
    "ConsumerProcess",
    "consumer_env",
    "ensure_model",
    "metrics_summary",
    "scrape",
    "wait_for",
]

#: Daemon tuning for the local stack: the KCL's default shard sync interval (60 s) delays the first lease a minute.
LOCAL_KCL_PROPERTIES = '{"shardSyncIntervalMillis": "10000", "parentShardPollIntervalMillis": "1000"}'

MODEL_NAME = "ride-duration"
MODEL_ALIAS = "production"

#: Records no consumer can score, with the partition key used: every dead-letter reason a record can earn on its own
#: (not UTF-8, not JSON, not an object, a missing or wrong-typed field, a ride id too long to be a partition key),
#: ten in all. Unusual values (a negative or 99,999-mile trip, zone 999) are not here: such rides are scored.
POISON_RECORDS: list[tuple[bytes, str]] = [
    (b"\xff\xfe\x00 not utf-8", "poison-1"),
    (b"{this is not json", "poison-2"),
    (b'["a", "list"]', "poison-3"),
    (b'{"ride_id": 1}', "poison-4"),
    (b'{"ride": {"PULocationID": "130", "DOLocationID": 205, "trip_distance": 3.66}, "ride_id": 5}', "poison-5"),
    (b'{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": NaN}, "ride_id": 6}', "poison-6"),
    (b'{"ride": "130_205", "ride_id": 7}', "poison-7"),
    (
        b'{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 1.0}, "ride_id": "' + b"8" * 300 + b'"}',
        "poison-8",
    ),
    (b'{"ride": {"PULocationID": 130, "DOLocationID": 20.5, "trip_distance": 1.0}, "ride_id": 9}', "poison-9"),
    (b'{"ride": {"PULocationID": 130, "DOLocationID": 205}, "ride_id": 10}', "poison-10"),
]


def ensure_model(store_dir: Path, trips: str = DEFAULT_TRIPS, *, n_estimators: int = 100) -> str:
    """Return ``models:/ride-duration@production`` from the local store, training and registering it first if the
    alias does not exist yet."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from consumer.tools.training import local_store, train

    tracking_uri, artifacts = local_store(store_dir)
    uri = f"models:/{MODEL_NAME}@{MODEL_ALIAS}"
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_model_version_by_alias(MODEL_NAME, MODEL_ALIAS)
        return uri
    except MlflowException:
        pass
    train(trips, tracking_uri=tracking_uri, artifact_location=artifacts, n_estimators=n_estimators)
    return uri


def consumer_env(
    stack_env: Mapping[str, str],
    *,
    input_stream: str,
    predictions_stream: str,
    dead_letter_stream: str,
    model_uri: str,
    tracking_uri: str,
    application_name: str,
    work_dir: Path,
    worker_id: str = "local-worker-1",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of ``python -m consumer run`` against the local stack."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KCL_", "MLFLOW_"))}
    env.update(stack_env)
    env.update(
        INPUT_STREAM_NAME=input_stream,
        PREDICTIONS_STREAM_NAME=predictions_stream,
        DEAD_LETTER_STREAM_NAME=dead_letter_stream,
        KCL_APPLICATION_NAME=application_name,
        KCL_INITIAL_POSITION="TRIM_HORIZON",
        KCL_WORKER_ID=worker_id,
        KCL_IDLE_TIME_BETWEEN_READS_MS="250",
        MODEL_URI=model_uri,
        MLFLOW_TRACKING_URI=tracking_uri,
        MODEL_CACHE_DIR=str(work_dir / "model-cache"),
        CONSUMER_WORK_DIR=str(work_dir / application_name),
        KCL_JAVA_OPTS="-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
        KCL_EXTRA_PROPERTIES=LOCAL_KCL_PROPERTIES,
        # Several consumers may run side by side here: each gets a free port (logged) and its own metrics folder.
        METRICS_HOST="127.0.0.1",
        METRICS_PORT="0",
        PROMETHEUS_MULTIPROC_DIR=str(work_dir / application_name / f"metrics-{worker_id}"),
    )
    env.update(extra or {})
    return env


def _run_command() -> list[str]:
    return [sys.executable, "-m", "consumer", "run"]


@dataclass
class ConsumerProcess:
    """``python -m consumer run`` (or ``command``: another KCL version's launcher, :mod:`consumer.tools.kcljars`)
    as a subprocess, its output in ``log_path``. KCL 2.x creates its lease table itself; with ``lease_table`` (the
    version comparison's KCL 3 only) :meth:`start` first creates KCL 3's lease table with its index when the
    environment points at a local DynamoDB (:mod:`consumer.tools.leasetable`: the local DynamoDB cannot add it)."""

    env: dict[str, str]
    log_path: Path
    command: list[str] = field(default_factory=_run_command)
    lease_table: bool = False
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> ConsumerProcess:
        from consumer.tools.leasetable import prepare_local_lease_table

        if self.lease_table:
            prepare_local_lease_table(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (a graceful drain), then wait; kill after ``timeout``. Return the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
        return int(self.process.returncode)

    def metrics_url(self) -> str | None:
        """``http://host:port`` of its /metrics, /healthz and /readyz, from the launcher's last
        ``metrics_server_started`` log line (None before that line)."""
        url = None
        for line in self.log_path.read_text(errors="replace").splitlines():
            if '"metrics_server_started"' in line:
                with contextlib.suppress(ValueError, KeyError):
                    event = json.loads(line)
                    url = f"http://{event['host']}:{event['port']}"
        return url

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> int:
        """kill -9 the launcher and every process it started (the daemon's process group, the record processors and
        whatever else runs under it), as a lost node would: no shutdown hook, no checkpoint. Return the
        launcher's exit status (-9)."""
        import psutil

        assert self.process is not None
        try:
            started = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            started = []
        self.process.kill()
        for process in started:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if process.pid == os.getpgid(process.pid):  # the daemon: the launcher gives it a session of its own
                    os.killpg(process.pid, signal.SIGKILL)
                process.kill()
        self.process.wait()
        if self._log is not None:
            self._log.close()
        return int(self.process.returncode)


def scrape(url: str) -> list[Sample]:
    """Every sample of a consumer's /metrics (``url`` is its metrics server); raise OSError if it does not answer."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:  # loopback: the consumer's own server
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metrics_summary(url: str | None) -> str:
    """The headline figures of a consumer's /metrics, on one line."""
    if url is None:
        return "no metrics server"
    try:
        samples = scrape(url)
    except OSError as exc:
        return f"{url}/metrics did not answer: {exc}"
    totals: dict[str, float] = {}
    reasons: dict[str, int] = {}
    lag: dict[str, float] = {}
    version = "?"
    for sample in samples:
        if sample.name == "ride_consumer_dead_letters_total" and sample.value:
            reasons[sample.labels["reason"]] = reasons.get(sample.labels["reason"], 0) + int(sample.value)
        elif sample.name == "ride_consumer_seconds_behind_latest":
            lag[sample.labels["shard_id"].removeprefix("shardId-")] = sample.value
        elif sample.name == "ride_consumer_model_info":
            version = sample.labels["version"]
        totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return (
        f"{url}/metrics: in {totals.get('ride_consumer_records_received_total', 0):.0f}, "
        f"predictions {totals.get('ride_consumer_predictions_written_total', 0):.0f}, "
        f"dead letters {dict(sorted(reasons.items()))}, seconds behind {lag}, "
        f"leases {totals.get('ride_consumer_leases_held', 0):.0f}, model version {version}, "
        f"ready {totals.get('ride_consumer_ready', 0):.0f}"
    )


def wait_for(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.5, on_wait: Callable[[], None] | None = None
) -> Any:
    """Poll ``condition`` until it returns something truthy or ``timeout`` passes (then return its last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        if on_wait is not None:
            on_wait()
        time.sleep(interval)
