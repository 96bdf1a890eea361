"""Fixtures for the fault suite: the real daemon (``python -m consumer run``) against kinesis-local and dynalite,
the processors' Kinesis traffic through the fault-injection proxy, and the ledger to judge the outcome.

One LocalStack per session (dynalite on LevelDB, so the lease store can be restarted with its data); every
scenario gets fresh streams (kinesis-local slows down as a shard fills), a fresh application (lease table), its
own proxy, and reports its ledger figures in the session summary.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from consumer.runtime.aws import KinesisClient
from consumer.tools.harness import LOCAL_KCL_PROPERTIES, ConsumerProcess, consumer_env, wait_for
from consumer.tools.ledger import Ledger, format_ledger, read_ledger, read_stream
from consumer.tools.localstack import LocalStack
from consumer.tools.replay import ReplaySummary, replay
from tests.faults.kinesis_proxy import KinesisProxy
from tests.support.models import model_pipeline, save_mlflow_model, training_rows, trips_file
from tests.support.probes import json_lines
from tests.support.stack import Streams, lease_table, running_stack

#: The figures of each scenario, printed at the end of the session.
FIGURES: list[dict[str, Any]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("fault suite: the ledger of each scenario")
    width = max(len(row["scenario"]) for row in FIGURES)
    columns = ("in", "predicted", "dead_lettered", "duplicated", "missing", "seconds")
    terminalreporter.write_line(f"{'scenario':<{width}} " + " ".join(f"{name:>13}" for name in columns))
    for row in FIGURES:
        values = " ".join(f"{row[name]:>13.0f}" for name in columns)
        terminalreporter.write_line(f"{row['scenario']:<{width}} {values}")


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The suite's LocalStack: dynalite keeps its tables in LevelDB, so ``restart_dynamodb`` keeps the leases."""
    work = tmp_path_factory.mktemp("fault-stack")
    yield from running_stack(work, dynamodb_path=work / "dynalite-leveldb")


# --- Models -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Models:
    """MLflow model directories (MODEL_URI accepts a directory): the seed's pipeline, and a fragile variant whose
    feature transform overflows float32 for trips over ~89 miles, so the forest raises on exactly those rides. The
    fragile one's MLmodel trusts numpy.expm1, outside the default allow-list: start it with
    ``MODEL_TRUSTED_TYPES=fragile_trusted_types``."""

    healthy: str
    fragile: str
    cache_dir: str
    fragile_trusted_types: str


FRAGILE_ABOVE_MILES = 89.0


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    import numpy as np
    from sklearn.preprocessing import FunctionTransformer

    from consumer.model.trust import DEFAULT_TRUSTED_TYPES

    rows, durations = training_rows(sample=20_000, max_miles=60)
    root = tmp_path_factory.mktemp("models")
    healthy = save_mlflow_model(model_pipeline(n_estimators=20).fit(rows, durations), root / "healthy")
    # expm1 is monotonic, so the forest splits the same way; above ~88.7 miles expm1 exceeds float32's range and
    # RandomForestRegressor.predict raises "Input X contains infinity or a value too large for dtype('float32')".
    forest = model_pipeline(n_estimators=10).steps[-1][1]
    fragile = model_pipeline(FunctionTransformer(np.expm1, accept_sparse=True), forest).fit(rows, durations)
    fragile_uri = save_mlflow_model(fragile, root / "fragile", trusted_types=("numpy.expm1",))
    return Models(
        healthy=healthy,
        fragile=fragile_uri,
        cache_dir=str(root / "prepared"),
        fragile_trusted_types=",".join([*DEFAULT_TRUSTED_TYPES, "numpy.expm1"]),
    )


# --- A scenario -----------------------------------------------------------------------------------------------------


class Load(threading.Thread):
    """Steady load: real rides replayed at a fixed rate in a background thread; :meth:`result` joins it."""

    def __init__(self, kinesis: KinesisClient, stream: str, rides: int, rate: float, start_ride_id: int) -> None:
        super().__init__(name=f"load-{stream}", daemon=True)
        self._args = (kinesis, stream, rides, rate, start_ride_id)
        self.summary: ReplaySummary | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        kinesis, stream, rides, rate, start_ride_id = self._args
        try:
            self.summary = replay(
                trips_file(),
                client=kinesis,
                stream_name=stream,
                limit=rides,
                rate_per_second=rate,
                start_ride_id=start_ride_id,
                skip_invalid=True,
                duration_range=(1, 60),
                progress=False,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread by result()
            self.error = exc

    def result(self, timeout: float = 120) -> ReplaySummary:
        self.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.summary is not None, "the load did not finish"
        return self.summary


@dataclass
class Scenario:
    """Fresh streams and application, a proxy, and helpers to start consumers and read the ledger."""

    name: str
    stack: LocalStack
    proxy: KinesisProxy
    models: Models
    work_dir: Path
    input: str
    predictions: str
    dead_letters: str
    application: str
    consumers: list[ConsumerProcess] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def kinesis(self) -> KinesisClient:
        return self.stack.kinesis_client()

    def start(self, worker_id: str = "worker-1", *, model_uri: str | None = None, **extra: str) -> ConsumerProcess:
        """``python -m consumer run``: its boto3 traffic through the proxy, the daemon straight to kinesis-local."""
        properties = {**json.loads(LOCAL_KCL_PROPERTIES), "kinesisEndpoint": self.stack.kinesis_endpoint}
        properties.update(json.loads(extra.pop("KCL_EXTRA_PROPERTIES", "{}")))
        env = consumer_env(
            self.stack.env(),
            input_stream=self.input,
            predictions_stream=self.predictions,
            dead_letter_stream=self.dead_letters,
            model_uri=model_uri or self.models.healthy,
            tracking_uri=f"file://{self.work_dir / 'mlruns'}",
            application_name=self.application,
            work_dir=self.work_dir,
            worker_id=worker_id,
            extra={
                "AWS_ENDPOINT_URL_KINESIS": self.proxy.endpoint,
                "KCL_EXTRA_PROPERTIES": json.dumps(properties),
                "MODEL_CACHE_DIR": self.models.cache_dir,
                # Its own rendered properties (workerId!) and fork-server socket: workers must not share them.
                "CONSUMER_WORK_DIR": str(self.work_dir / self.application / f"{worker_id}-{len(self.consumers)}"),
                **extra,
            },
        )
        log = self.work_dir / f"consumer-{worker_id}-{len(self.consumers)}.log"
        consumer = ConsumerProcess(env, log).start()
        self.consumers.append(consumer)
        return consumer

    def load(self, rides: int, *, rate: float, start_ride_id: int = 1) -> Load:
        load = Load(self.stack.kinesis_client(), self.input, rides, rate, start_ride_id)
        load.start()
        return load

    def ledger(self) -> Ledger:
        return read_ledger(self.kinesis, self.input, self.predictions, self.dead_letters, timeout=60)

    def outputs(self) -> int:
        """How many input records have an event (a prediction or a dead letter) so far."""
        events = read_stream(self.kinesis, self.predictions) + read_stream(self.kinesis, self.dead_letters)
        return len({record.event["event_id"] for record in events})

    def wait_for_outputs(self, at_least: int, *, timeout: float = 120) -> None:
        """Until at least ``at_least`` input records have an event; fail with the consumers' logs otherwise."""
        reached = wait_for(lambda: self.outputs() >= at_least, timeout=timeout, interval=1.0)
        assert reached, f"fewer than {at_least} records came out within {timeout:g} s\n{self.tails()}"

    def wait_until_accounted(self, expected: int, *, timeout: float = 180) -> Ledger:
        """Until all ``expected`` input records have an event, nothing is missing and every lease is checkpointed at
        its shard's last record (or SHARD_END): a batch replayed after a fault has then been written again too.
        Return that ledger."""

        def settled() -> Ledger | None:
            ledger = self.ledger()
            counts = ledger.counts
            if counts["in"] < expected or counts["missing"]:
                return None
            last = {fate.shard_id: fate.sequence_number for fate in ledger.records}
            try:
                leases = self.leases()
            except Exception:  # noqa: BLE001 - the lease store may be restarting; ask again
                return None
            done = all(
                lease["checkpoint"] in (last.get(shard), "SHARD_END")
                or (shard not in last and lease["checkpoint"] == "TRIM_HORIZON")
                for shard, lease in leases.items()
            )
            return ledger if done else None

        ledger = wait_for(settled, timeout=timeout, interval=2.0)
        if ledger is None:
            raise AssertionError(
                f"not every record accounted for within {timeout:g} s:\n{format_ledger(self.ledger())}\n{self.tails()}"
            )
        return ledger

    def leases(self) -> dict[str, dict[str, str]]:
        """The lease table: shard id -> {owner, checkpoint}."""
        return lease_table(self.stack, self.application)

    def tails(self, lines: int = 25) -> str:
        return "\n".join(f"--- {c.log_path.name} ---\n{c.tail(lines)}" for c in self.consumers)

    def record(self, ledger: Ledger) -> None:
        """Keep this scenario's figures for the session summary."""
        counts = ledger.counts
        FIGURES.append(
            {
                "scenario": self.name,
                "in": counts["in"],
                "predicted": counts["predicted"],
                "dead_lettered": counts["dead_lettered"],
                "duplicated": counts["duplicated"],
                "missing": counts["missing"],
                "seconds": time.monotonic() - self.started,
            }
        )


def log_events(consumer: ConsumerProcess) -> list[dict[str, Any]]:
    """The JSON log lines of a consumer (launcher, daemon-relayed processors)."""
    return json_lines(consumer.log_path.read_text(errors="replace"))


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest, local_stack: LocalStack, models: Models, tmp_path: Path
) -> Iterator[Callable[..., Scenario]]:
    """``scenario(input_shards=2)``: fresh streams, application and proxy; consumers left running are killed at
    the end (a scenario that wanted a graceful stop has done it itself)."""
    made: list[Scenario] = []
    proxy = KinesisProxy(local_stack.kinesis_endpoint).start()

    def make(input_shards: int = 2) -> Scenario:
        streams = Streams.create(local_stack, input_shards=input_shards)
        made.append(
            Scenario(
                request.node.name.removeprefix("test_"),
                local_stack,
                proxy,
                models,
                tmp_path,
                streams.input,
                streams.predictions,
                streams.dead_letters,
                application=f"faults-{uuid.uuid4().hex[:8]}",
            )
        )
        return made[-1]

    yield make
    proxy.stop()
    for item in made:
        for consumer in item.consumers:
            if consumer.running():
                consumer.kill()
