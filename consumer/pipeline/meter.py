"""What a record processor records about its shard: the pipeline's Prometheus instrumentation.

One prefix (``ride_consumer_``), base units, ``_total`` on counters, bounded labels (``shard_id``, ``reason``,
``kind``, ``sink``, ``error``; never a ride id or a sequence number). Shard processes run in prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` is in their environment before the client is first imported), so
every value lives in a file of that directory and a shard process that exits or moves to another pod loses no
counts; the launcher serves them (:mod:`consumer.runtime.metrics`). Gauges use ``live*`` modes: the files of a
process that has exited are removed, so its lag and lease vanish with it.
"""

from __future__ import annotations

import bisect
import collections
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumer.pipeline.events import Reason, Unusual

__all__ = ["BUSY_SINCE", "PREFIX", "ShardMeter", "ShardMetrics"]

PREFIX = "ride_consumer"
#: The gauge /healthz reads to find a processor stuck inside one call.
BUSY_SINCE = f"{PREFIX}_processor_busy_since_timestamp_seconds"

#: Label values known in advance; their series exist at 0 from the first lease.
DEAD_LETTER_REASONS = tuple(value for name, value in vars(Reason).items() if name.isupper())
UNUSUAL_KINDS = tuple(value for name, value in vars(Unusual).items() if name.isupper())
CHECKPOINT_ERRORS = ("ShutdownException", "InvalidStateException")
SINKS = ("predictions", "dead_letters")

#: Records per processRecords call: up to KCL_MAX_RECORDS (at most 10,000).
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
#: One predict call on a batch, bisection included.
SCORING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: One Sink.put or one whole batch: PutRecords round trips, plus backoff when entries are retried.
IO_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Predicted ride durations, minutes: a new model version's distribution beside the old one's.
PREDICTION_BUCKETS = (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 90.0)


@dataclass(frozen=True)
class ShardMetrics:
    """What the shard processes record. Build it once per process with :meth:`create`."""

    records_received: Counter
    predictions_written: Counter
    dead_letters: Counter
    unusual_rides: Counter
    batches: Counter
    batch_failures: Counter
    model_broken: Counter
    batch_size: Histogram
    batch_duration: Histogram
    scoring_duration: Histogram
    put_duration: Histogram
    put_entries_retried: Counter
    put_failures: Counter
    checkpoints: Counter
    checkpoint_failures: Counter
    seconds_behind_latest: Gauge
    newest_record_timestamp: Gauge
    leases_held: Gauge
    busy_since: Gauge
    shard_model: Gauge
    model_switched_at: Gauge
    model_switches: Counter
    predicted_duration: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ShardMetrics:
        """The metrics, registered with ``registry`` (tests read them there). Shard processes pass None: in
        multiprocess mode the values go to the directory's files whatever the registry."""

        def name(short: str) -> str:
            return f"{PREFIX}_{short}"

        shard = ["shard_id"]
        return cls(
            records_received=Counter(
                name("records_received"), "Records the daemon delivered to processRecords.", shard, registry=registry
            ),
            predictions_written=Counter(
                name("predictions_written"),
                "Prediction events the predictions stream accepted.",
                shard,
                registry=registry,
            ),
            dead_letters=Counter(
                name("dead_letters"),
                "Dead-letter events the dead-letter stream accepted, by reason.",
                [*shard, "reason"],
                registry=registry,
            ),
            unusual_rides=Counter(
                name("unusual_rides"),
                "Rides scored although a value is unusual, by kind (long_distance: over 1,000 miles; "
                "negative_distance; unknown_zone: a zone id outside 1..265).",
                [*shard, "kind"],
                registry=registry,
            ),
            batches=Counter(
                name("batches"),
                "Batches finished: written and checkpointed (in a dry run: scored).",
                shard,
                registry=registry,
            ),
            batch_failures=Counter(
                name("batch_failures"),
                "Batches that could not be finished; the processor stopped and the shard resumes from its last "
                "checkpoint.",
                shard,
                registry=registry,
            ),
            model_broken=Counter(
                name("model_broken"),
                "Batches the model failed on as a whole while failing the probe rides it scored when prepared: the "
                "model is broken, the processor stopped without dead-lettering or checkpointing the batch.",
                shard,
                registry=registry,
            ),
            batch_size=Histogram(
                name("batch_size_records"),
                "Records per processRecords call.",
                shard,
                buckets=BATCH_SIZE_BUCKETS,
                registry=registry,
            ),
            batch_duration=Histogram(
                name("batch_duration_seconds"),
                "One batch from delivery to checkpoint: decode, score, encode, put, checkpoint.",
                shard,
                buckets=IO_BUCKETS,
                registry=registry,
            ),
            scoring_duration=Histogram(
                name("scoring_duration_seconds"),
                "The model's predict call on one batch, bisection on model errors included.",
                shard,
                buckets=SCORING_BUCKETS,
                registry=registry,
            ),
            put_duration=Histogram(
                name("put_duration_seconds"),
                "Writing one batch's events to a stream: every PutRecords call, retries and backoff included.",
                ["sink"],
                buckets=IO_BUCKETS,
                registry=registry,
            ),
            put_entries_retried=Counter(
                name("put_entries_retried"),
                "Entries PutRecords reported failed (or a whole call that failed) and that were sent again.",
                ["sink"],
                registry=registry,
            ),
            put_failures=Counter(
                name("put_failures"),
                "Writes that gave up (retry budget spent, stream missing, access denied); the shard stops.",
                ["sink"],
                registry=registry,
            ),
            checkpoints=Counter(name("checkpoints"), "Checkpoints the daemon confirmed.", shard, registry=registry),
            checkpoint_failures=Counter(
                name("checkpoint_failures"),
                "Checkpoints that failed, by the daemon's exception (ShutdownException: the lease was lost).",
                [*shard, "error"],
                registry=registry,
            ),
            seconds_behind_latest=Gauge(
                name("seconds_behind_latest"),
                "How far the last batch was behind the tip of its shard (processRecords' millisBehindLatest).",
                shard,
                multiprocess_mode="livemax",
                registry=registry,
            ),
            newest_record_timestamp=Gauge(
                name("newest_record_timestamp_seconds"),
                "Approximate arrival time of the newest record processed, in Unix seconds; its age is time() - this.",
                shard,
                multiprocess_mode="livemax",
                registry=registry,
            ),
            leases_held=Gauge(
                name("leases_held"),
                "1 while this pod's processor holds the shard's lease.",
                shard,
                multiprocess_mode="livesum",
                registry=registry,
            ),
            busy_since=Gauge(
                BUSY_SINCE,
                "When the processor started the call it is handling, in Unix seconds; 0 while it waits for the "
                "daemon. /healthz fails when a call lasts longer than the daemon's timeoutInSeconds.",
                shard,
                multiprocess_mode="livemax",
                registry=registry,
            ),
            shard_model=Gauge(
                name("shard_model_info"),
                "The model version a shard's processor scores with (1), and the versions it scored with before (0).",
                [*shard, "version"],
                multiprocess_mode="livemax",
                registry=registry,
            ),
            model_switched_at=Gauge(
                name("shard_model_switch_timestamp_seconds"),
                "When the shard's processor took up the version it scores with (at its start, or at the batch "
                "boundary where it switched), in Unix seconds.",
                shard,
                multiprocess_mode="livemax",
                registry=registry,
            ),
            model_switches=Counter(
                name("model_switches"),
                "Times a shard's processor switched to another model version at a batch boundary.",
                shard,
                registry=registry,
            ),
            predicted_duration=Histogram(
                name("predicted_duration_minutes"),
                "Predicted ride durations, by the model version that scored them: a new version beside the old.",
                ["version"],
                buckets=PREDICTION_BUCKETS,
                registry=registry,
            ),
        )

    def for_shard(self, shard_id: str, *, clock: Callable[[], float] = time.time) -> ShardMeter:
        """What one processor records, every value labelled with its shard."""
        return ShardMeter(self, shard_id, clock)


@dataclass(frozen=True)
class ShardMeter:
    """The record processor's view of :class:`ShardMetrics`: one call per thing that happened to its shard."""

    metrics: ShardMetrics
    shard_id: str
    clock: Callable[[], float] = time.time

    def lease_gained(self) -> None:
        """The shard is ours. Its counters appear at 0 now, failures and every dead-letter reason included, so
        rate() sees the first event and dashboards and alerts find every series before anything goes wrong."""
        m, shard = self.metrics, self.shard_id
        counters = (m.records_received, m.predictions_written, m.batches, m.batch_failures, m.model_broken)
        for counter in (*counters, m.checkpoints):
            counter.labels(shard)
        for reason in DEAD_LETTER_REASONS:
            m.dead_letters.labels(shard, reason)
        for kind in UNUSUAL_KINDS:
            m.unusual_rides.labels(shard, kind)
        for error in CHECKPOINT_ERRORS:
            m.checkpoint_failures.labels(shard, error)
        for sink in SINKS:
            m.put_failures.labels(sink)
            m.put_entries_retried.labels(sink)
        m.leases_held.labels(shard).set(1)

    def model_taken_up(self, version: str, previous: str | None = None) -> None:
        """The processor scores with ``version`` from now on (``previous``: the one it replaces at a switch)."""
        m, shard = self.metrics, self.shard_id
        if previous is not None:
            m.shard_model.labels(shard, previous).set(0)
            m.model_switches.labels(shard).inc()
        else:
            m.model_switches.labels(shard)
        m.shard_model.labels(shard, version).set(1)
        m.model_switched_at.labels(shard).set(self.clock())

    def predicted(self, version: str, durations: Iterable[float]) -> None:
        """The durations of one batch's predictions, scored by ``version``: one increment per bucket, not per ride.

        ``Histogram.observe`` writes the sum and a bucket for every value (two locked writes to the multiprocess
        file each); a batch of a thousand rides would pay that a thousand times. The buckets are counted here and
        each written once, through the same value objects ``observe`` writes (``tests/unit/test_model_follow.py``
        checks the result against ``observe``'s)."""
        values = list(durations)
        if not values:
            return
        child = self.metrics.predicted_duration.labels(version)
        bounds = child._upper_bounds
        for index, count in collections.Counter(bisect.bisect_left(bounds, value) for value in values).items():
            child._buckets[index].inc(count)
        child._sum.inc(math.fsum(values))

    def lease_dropped(self) -> None:
        self.metrics.leases_held.labels(self.shard_id).set(0)

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Around a call from the daemon: /healthz sees a processor stuck inside one."""
        gauge = self.metrics.busy_since.labels(self.shard_id)
        gauge.set(self.clock())
        try:
            yield
        finally:
            gauge.set(0)

    def batch_received(self, records: int, millis_behind_latest: int | None) -> None:
        if millis_behind_latest is not None:
            self.metrics.seconds_behind_latest.labels(self.shard_id).set(millis_behind_latest / 1000)
        if records:
            self.metrics.records_received.labels(self.shard_id).inc(records)
            self.metrics.batch_size.labels(self.shard_id).observe(records)

    def scoring(self) -> AbstractContextManager[object]:
        """Times the predict call."""
        return self.metrics.scoring_duration.labels(self.shard_id).time()

    @contextmanager
    def put(self, sink: str) -> Iterator[None]:
        """Times one Sink.put; a put that raises counts as a failure of ``sink`` ("predictions", "dead_letters")."""
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.metrics.put_failures.labels(sink).inc()
            raise
        self.metrics.put_duration.labels(sink).observe(time.perf_counter() - started)

    def batch_done(
        self,
        *,
        predictions: int,
        dead_letter_reasons: Iterable[str],
        newest_arrival_millis: int,
        seconds: float,
        unusual_kinds: Iterable[str] = (),
    ) -> None:
        """A batch is finished (written and checkpointed, or scored in a dry run)."""
        m, shard = self.metrics, self.shard_id
        m.predictions_written.labels(shard).inc(predictions)
        for reason, count in collections.Counter(dead_letter_reasons).items():
            m.dead_letters.labels(shard, str(reason)).inc(count)
        for kind, count in collections.Counter(unusual_kinds).items():
            m.unusual_rides.labels(shard, str(kind)).inc(count)
        m.batches.labels(shard).inc()
        m.batch_duration.labels(shard).observe(seconds)
        m.newest_record_timestamp.labels(shard).set(newest_arrival_millis / 1000)

    def batch_failed(self) -> None:
        self.metrics.batch_failures.labels(self.shard_id).inc()

    def model_broken(self) -> None:
        self.metrics.model_broken.labels(self.shard_id).inc()

    def checkpointed(self) -> None:
        self.metrics.checkpoints.labels(self.shard_id).inc()

    def checkpoint_failed(self, error: str) -> None:
        self.metrics.checkpoint_failures.labels(self.shard_id, error).inc()
