"""Workers of one variant on a local stack of their own: their environment, their load, what the lease table and the
coordinator state say, and the ledger that judges them.

A cluster is a context manager: it starts its own emulators (kinesis-local slows down, and after a few tens of
thousands of records stops answering, when one process carries every scenario's streams) and stops them and its
workers on exit. Every worker is ``python -m consumer run`` on the variant's jars
(:func:`consumer.tools.kcljars.launcher_command`), configured by the harness as every local run is (polling every
250 ms), plus the variant's properties (KCL 3: worker metrics off). Times are wall-clock seconds (``time.time()``),
the clock of the consumers' log lines.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from consumer.tools.bench import kcl_log
from consumer.tools.bench.accounting import cpu_seconds
from consumer.tools.bench.rides import Rides
from consumer.tools.harness import LOCAL_KCL_PROPERTIES, ConsumerProcess, consumer_env, wait_for
from consumer.tools.kclcompare.variants import Variant
from consumer.tools.kcljars import launcher_command
from consumer.tools.leasetable import coordinator_state, leases
from consumer.tools.ledger import read_ledger

__all__ = ["Cluster", "Load", "say"]


def say(message: str) -> None:
    import sys

    print(f"[kcl-compare] {message}", file=sys.stderr, flush=True)


class Load(threading.Thread):
    """Puts ``rate`` rides a second on a stream (PutRecords every 100 ms) until :meth:`stop`; ride ids from
    ``next_id``, which it advances."""

    def __init__(self, client: Any, stream: str, rides: Rides, rate: int, next_id: list[int]) -> None:
        super().__init__(daemon=True)
        self._client, self._stream, self._rides, self._rate, self._next_id = client, stream, rides, rate, next_id
        self._halt = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from consumer.pipeline.sink import Entry, KinesisSink

        sink = KinesisSink(self._client, self._stream, backoff_first_seconds=0.05, backoff_max_seconds=1)
        per_tick = max(1, self._rate // 10)
        next_tick = time.monotonic()
        try:
            while not self._halt.is_set():
                payloads = self._rides.cycle(per_tick, start_id=self._next_id[0])
                self._next_id[0] += per_tick
                sink.put([Entry(data, key) for data, key in payloads])
                self.sent += per_tick
                next_tick += 0.1
                self._halt.wait(max(0.0, next_tick - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - handed over by stop()
            self.error = exc

    def stop(self) -> int:
        self._halt.set()
        self.join(timeout=30)
        if self.error is not None:
            raise self.error
        return self.sent


@dataclass
class Cluster:
    """The workers of one variant on fresh emulators, streams and application (``with Cluster(...) as cluster``)."""

    variant: Variant
    model_uri: str
    tracking_uri: str
    jar_dir: Path
    work_dir: Path
    rides: Rides
    shards: int
    rate: int
    workers: dict[str, ConsumerProcess] = field(default_factory=dict)
    _next_id: list[int] = field(default_factory=lambda: [1])
    _starts: int = 0

    def __enter__(self) -> Cluster:
        from consumer.tools.localstack import LocalStack

        suffix = uuid.uuid4().hex[:6]
        self.application = f"compare-{self.variant.key}-{suffix}"
        self.work_dir = self.work_dir / self.application
        self.stack = LocalStack(self.work_dir / "stack").start()
        self.input, self.predictions, self.dead = (f"{name}-{suffix}" for name in ("rides", "predictions", "dead"))
        self.stack.create_stream(self.input, self.shards)
        self.stack.create_stream(self.predictions, 1)
        self.stack.create_stream(self.dead, 1)
        self.kinesis = self.stack.kinesis_client()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        self.stack.stop(keep_work_dir=True)

    # --- workers ------------------------------------------------------------------------------------------------
    def start(self, worker: str) -> ConsumerProcess:
        properties = {**json.loads(LOCAL_KCL_PROPERTIES), **self.variant.properties}
        self._starts += 1
        env = consumer_env(
            self.stack.env(),
            input_stream=self.input,
            predictions_stream=self.predictions,
            dead_letter_stream=self.dead,
            model_uri=self.model_uri,
            tracking_uri=self.tracking_uri,
            application_name=self.application,
            work_dir=self.work_dir,
            worker_id=worker,
            extra={
                "KCL_JAR_DIR": str(self.jar_dir),
                "KCL_EXTRA_PROPERTIES": json.dumps(properties),
                "MODEL_CACHE_DIR": str(self.work_dir.parent / "model-cache"),
                "CONSUMER_WORK_DIR": str(self.work_dir / f"{worker}-{self._starts}"),
            },
        )
        consumer = ConsumerProcess(
            env,
            self.work_dir / f"{worker}-{self._starts}.log",
            command=launcher_command(self.variant.lock),
            lease_table=self.variant.precreate_lease_table,
        )
        self.workers[worker] = consumer.start()
        return consumer

    def daemon(self, worker: str) -> psutil.Process | None:
        """The worker's java process (the launcher's child running the MultiLangDaemon)."""
        process = self.workers[worker].process
        if process is None:
            return None
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(process.pid).children():
                if "MultiLangDaemon" in " ".join(child.cmdline()):
                    return child
        return None

    def daemon_cpu_seconds(self, worker: str) -> float:
        daemon = self.daemon(worker)
        return cpu_seconds(daemon) if daemon is not None else 0.0

    def stop_all(self) -> None:
        for consumer in self.workers.values():
            if consumer.running():
                consumer.kill()

    # --- what the daemons say -------------------------------------------------------------------------------------
    def owners(self) -> dict[str, str]:
        """Shard -> the worker holding its lease (an empty owner when none does)."""
        with contextlib.suppress(Exception):
            return {
                shard: lease["owner"] for shard, lease in leases(self.stack.dynamodb_endpoint, self.application).items()
            }
        return {}

    def leader(self) -> str | None:
        """KCL 3: the worker holding the leader lock (the coordinator state table's ``Leader`` item)."""
        state = coordinator_state(self.stack.dynamodb_endpoint, self.application)
        return state.get("Leader", {}).get("ownerName")

    def balanced(self, workers: tuple[str, ...]) -> bool:
        """Every shard leased, each of ``workers`` holding its share."""
        owners = self.owners()
        if len(owners) < self.shards or any(owner not in workers for owner in owners.values()):
            return False
        counts = [list(owners.values()).count(worker) for worker in workers]
        return min(counts) >= self.shards // len(workers)

    def first_batches(self, worker: str, since: float = 0.0) -> dict[str, float]:
        """Shard -> when ``worker`` finished its first batch of that shard after ``since``."""
        first: dict[str, float] = {}
        for event in kcl_log.log_events(self.workers[worker].log_path, "batch_done"):
            at = kcl_log.seconds(event["timestamp"])
            if at > since and "shard_id" in event:
                first.setdefault(event["shard_id"], at)
        return first

    def first_batch(self, worker: str, shards: set[str], since: float) -> float | None:
        """When every one of ``shards`` has had a first batch on ``worker`` after ``since``: the latest of those
        first batches; None until each has one."""
        first = {shard: at for shard, at in self.first_batches(worker, since).items() if shard in shards}
        return max(first.values()) if set(first) >= shards else None

    def load(self, rate: int | None = None) -> Load:
        """Rides at ``rate`` a second (default: the cluster's) until the returned load is stopped."""
        load = Load(self.kinesis, self.input, self.rides, rate or self.rate, self._next_id)
        load.start()
        return load

    def preload(self, per_shard: int) -> None:
        from consumer.tools.replay import put_payloads

        count = per_shard * self.shards
        put_payloads(self.kinesis, self.input, self.rides.cycle(count, start_id=self._next_id[0]))
        self._next_id[0] += count

    # --- the ledger -------------------------------------------------------------------------------------------
    def settle(self, *, timeout: float = 600) -> dict[str, int]:
        """Once every record put so far has its event and every lease is checkpointed at its shard's last record:
        the ledger's counts. AssertionError with the workers' log tails when that does not happen in time."""

        def settled() -> dict[str, int] | None:
            ledger = read_ledger(self.kinesis, self.input, self.predictions, self.dead, timeout=60)
            counts = ledger.counts
            if counts["missing"] or counts["in"] != self._next_id[0] - 1:
                return None
            last = {fate.shard_id: fate.sequence_number for fate in ledger.records}
            with contextlib.suppress(Exception):
                table = leases(self.stack.dynamodb_endpoint, self.application)
                if all(lease["checkpoint"] == last.get(shard) for shard, lease in table.items()):
                    return counts
            return None

        counts = wait_for(settled, timeout=timeout, interval=3.0)
        if counts is None:
            tails = "\n".join(f"--- {name}\n{consumer.tail(15)}" for name, consumer in self.workers.items())
            raise AssertionError(f"{self.variant.key}: the records did not settle within {timeout:g} s\n{tails}")
        return counts

    def wait(self, condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
        value = wait_for(condition, timeout=timeout, interval=1.0)
        if not value:
            tails = "\n".join(f"--- {name}\n{consumer.tail(15)}" for name, consumer in self.workers.items())
            raise AssertionError(f"{self.variant.key}: {what} did not happen within {timeout:g} s\n{tails}")
        return value
