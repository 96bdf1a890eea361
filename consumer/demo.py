"""The one-command local stack: emulators, streams, model, consumer, replay, results.

``python -m consumer demo`` (``make demo``) runs the whole path on this machine: kinesis-local and dynalite on
loopback, the input stream (2 shards) plus the prediction and dead-letter streams, the model trained and
registered in a local MLflow store if none is there yet, the real KCL daemon with our record processors, a replay
of real TLC rides with a few poison records mixed in, and a summary of what came out. The end-to-end tests drive
the same pieces (:class:`ConsumerProcess`, :func:`ensure_model`, :func:`consumer_env`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from consumer.kcl import PROJECT_ROOT

__all__ = [
    "DEFAULT_TRIPS",
    "LOCAL_DIR",
    "POISON_RECORDS",
    "ConsumerProcess",
    "consumer_env",
    "ensure_model",
    "metrics_summary",
    "run_demo",
]

LOCAL_DIR = PROJECT_ROOT / ".local"
#: The January 2022 green-taxi file: beside the repo on the project's machines, else NYC TLC's public copy.
TLC_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_2022-01.parquet"
_SHARED_TRIPS = PROJECT_ROOT.parent / "shared" / "data" / "green_tripdata_2022-01.parquet"
DEFAULT_TRIPS = str(_SHARED_TRIPS) if _SHARED_TRIPS.exists() else TLC_URL

#: Daemon tuning for the local stack: the KCL's default shard sync interval (60 s) delays the first lease a minute.
LOCAL_KCL_PROPERTIES = '{"shardSyncIntervalMillis": "10000", "parentShardPollIntervalMillis": "1000"}'

MODEL_NAME = "ride-duration"
MODEL_ALIAS = "production"

#: Records no consumer can score, one of each kind the processor must set aside (with the partition key used).
POISON_RECORDS: list[tuple[bytes, str]] = [
    (b"\xff\xfe\x00 not utf-8", "poison-1"),
    (b"{this is not json", "poison-2"),
    (b'["a", "list"]', "poison-3"),
    (b'{"ride_id": 1}', "poison-4"),
    (b'{"ride": {"PULocationID": "130", "DOLocationID": 205, "trip_distance": 3.66}, "ride_id": 5}', "poison-5"),
    (b'{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": NaN}, "ride_id": 6}', "poison-6"),
    (b'{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": -2.5}, "ride_id": 7}', "poison-7"),
    (b'{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 99999.0}, "ride_id": 8}', "poison-8"),
    (b'{"ride": {"PULocationID": 999, "DOLocationID": 205, "trip_distance": 1.0}, "ride_id": 9}', "poison-9"),
    (b'{"ride": {"PULocationID": 130, "DOLocationID": 205}, "ride_id": 10}', "poison-10"),
]


def ensure_model(store_dir: Path, trips: str = DEFAULT_TRIPS, *, n_estimators: int = 100) -> str:
    """Return ``models:/ride-duration@production`` from the local store, training and registering it first if the
    alias does not exist yet."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from consumer.training import local_store, train

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


@dataclass
class ConsumerProcess:
    """``python -m consumer run`` as a subprocess, its output in ``log_path``."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> ConsumerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            cwd=PROJECT_ROOT,
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


def metrics_summary(url: str | None) -> str:
    """The headline figures of a consumer's /metrics, on one line."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    if url is None:
        return "no metrics server"
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError as exc:
        return f"{url}/metrics did not answer: {exc}"
    totals: dict[str, float] = {}
    reasons: dict[str, int] = {}
    lag: dict[str, float] = {}
    version = "?"
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
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


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def run_demo(
    *, rides: int = 3000, trips: str = DEFAULT_TRIPS, local_dir: Path = LOCAL_DIR, timeout: float = 240
) -> int:
    """Run the whole local path once and print what came out. Returns 0 when every record is accounted for."""
    from consumer.localstack import LocalStack
    from consumer.replay import put_payloads, replay, rmse
    from consumer.tail import StreamReader
    from consumer.training import local_store

    demo_dir = local_dir / "demo"
    run_id = uuid.uuid4().hex[:6]
    streams = {"input": "ride_events", "predictions": "ride_predictions", "dead_letters": "ride_dead_letters"}
    _say(f"state in {demo_dir} (MLflow store, model cache, logs); run {run_id}")
    with LocalStack(demo_dir / "emulators") as stack:
        _say(
            f"emulators up in {stack.timings.total:.1f}s: Kinesis {stack.kinesis_endpoint}, "
            f"DynamoDB {stack.dynamodb_endpoint}"
        )
        stack.create_stream(streams["input"], 2)
        stack.create_stream(streams["predictions"], 1)
        stack.create_stream(streams["dead_letters"], 1)
        _say("streams created: ride_events (2 shards), ride_predictions, ride_dead_letters")

        store = local_dir / "mlflow"
        _say(f"model: looking for {MODEL_NAME}@{MODEL_ALIAS} in {store} (training it if missing, ~1 min)")
        model_uri = ensure_model(store, trips)
        tracking_uri, _ = local_store(store)
        env = consumer_env(
            stack.env(),
            input_stream=streams["input"],
            predictions_stream=streams["predictions"],
            dead_letter_stream=streams["dead_letters"],
            model_uri=model_uri,
            tracking_uri=tracking_uri,
            application_name=f"ride-duration-demo-{run_id}",
            work_dir=demo_dir,
        )
        consumer = ConsumerProcess(env, demo_dir / f"consumer-{run_id}.log").start()
        _say(f"consumer started (python -m consumer run); its logs: {consumer.log_path}")
        try:
            kinesis = stack.kinesis_client()
            summary = replay(
                trips,
                client=kinesis,
                stream_name=streams["input"],
                limit=rides,
                skip_invalid=True,
                duration_range=(1, 60),
                progress=True,
            )
            put_payloads(kinesis, streams["input"], POISON_RECORDS)
            expected = summary.records_sent + len(POISON_RECORDS)
            _say(
                f"replayed {summary.records_sent} rides ({summary.records_per_second:.0f}/s) "
                f"+ {len(POISON_RECORDS)} poison records"
            )

            outputs = StreamReader(kinesis, streams["predictions"])
            dead = StreamReader(kinesis, streams["dead_letters"])
            predictions: list[Any] = []
            dead_letters: list[Any] = []
            started = time.monotonic()

            def progress() -> bool:
                predictions.extend(outputs.poll())
                dead_letters.extend(dead.poll())
                if not consumer.running():
                    raise RuntimeError(f"the consumer exited ({consumer.process.returncode}):\n{consumer.tail()}")
                return len(predictions) + len(dead_letters) >= expected

            def report() -> None:
                print(
                    f"\r[demo] {time.monotonic() - started:5.0f}s  predictions {len(predictions):5d}  "
                    f"dead letters {len(dead_letters):3d}  of {expected}  (the daemon's first lease "
                    f"takes ~30 s)",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

            done = wait_for(progress, timeout=timeout, interval=1.0, on_wait=report)
            report()
            print(file=sys.stderr)
            time.sleep(1.5)  # the last batch's counters follow its writes by a moment
            metrics = metrics_summary(consumer.metrics_url())
        finally:
            _say("stopping the consumer (SIGTERM: processors checkpoint, the daemon drains)")
            status = consumer.stop()
            _say(f"consumer exited with status {status}")

    predicted = {item.event["prediction"]["ride_id"]: item.event["prediction"]["ride_duration"] for item in predictions}
    error, scored = rmse(summary.ground_truth, predicted)
    print("\n=== ride-duration consumer demo ===")
    print(f"records in:        {expected} ({summary.records_sent} rides + {len(POISON_RECORDS)} poison)")
    print(f"predictions out:   {len(predictions)} (distinct rides {len(predicted)})")
    print(f"dead-lettered:     {len(dead_letters)}")
    reasons: dict[str, int] = {}
    for item in dead_letters:
        reasons[item.event["reason"]] = reasons.get(item.event["reason"], 0) + 1
    print(f"  by reason:       {dict(sorted(reasons.items()))}")
    print(f"online RMSE:       {error:.2f} minutes over {scored} rides (true duration from the replayed file)")
    print("a few prediction events:")
    for item in predictions[:3]:
        print(f"  {item.data.decode()}")
    print(f"model:             {model_uri} -> version {predictions[0].event['version'] if predictions else '?'}")
    print(f"/metrics said:     {metrics}")
    complete = bool(done) and len(predictions) + len(dead_letters) == expected
    print("result:            " + ("every record accounted for" if complete else "INCOMPLETE: see the consumer log"))
    return 0 if complete and status == 0 else 1
