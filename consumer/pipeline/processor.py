"""The record processor: one per leased shard, started by the KCL MultiLangDaemon, speaking JSON lines on
stdin/stdout through amazon_kclpy's KCLProcess.

A batch is decoded, validated, scored, encoded, written (dead letters and predictions) and only then
checkpointed at its last record, all within one deadline (:mod:`consumer.pipeline.deadline`). A batch that cannot
be completed (a sink or the checkpoint gave up, the deadline passed, the model is broken) stops this process with
exit status 1: amazon_kclpy would otherwise swallow the exception and the daemon would hand over the next batch,
losing this one. When the child exits the daemon stops too; the restart resumes from the last checkpoint.

The model can change while the processor runs (the launcher follows a registry alias): ``model_updates`` is asked
before each batch, so a whole batch is scored by one version and its events carry that version.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn, Protocol

import structlog
from amazon_kclpy.v3.processor import RecordProcessorBase
from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from consumer.errors import CheckpointFailed, ModelBroken
from consumer.model.features import PROBE_RIDES, Ride
from consumer.pipeline.batch import KclRecord, Model, decode_records, encode, expire_stale, score
from consumer.pipeline.checkpointing import Checkpointed, Checkpointer, checkpoint
from consumer.pipeline.deadline import Deadline
from consumer.pipeline.meter import ShardMeter, ShardMetrics
from consumer.pipeline.sink import Sink

__all__ = [
    "InitializeInput",
    "LeaseLostInput",
    "ModelUpdates",
    "ProcessRecordsInput",
    "RideProcessor",
    "ShardEndedInput",
    "ShutdownRequestedInput",
]


# What the daemon hands the processor: the fields of amazon_kclpy.messages' inputs that it reads (amazon_kclpy
# has no type hints). Tests pass their own objects with these fields.


class InitializeInput(Protocol):
    @property
    def shard_id(self) -> str: ...
    @property
    def sequence_number(self) -> str | None: ...


class ProcessRecordsInput(Protocol):
    # millis_behind_latest is read when present (amazon_kclpy's input always has it).
    @property
    def records(self) -> Sequence[KclRecord]: ...
    @property
    def checkpointer(self) -> Checkpointer: ...


class LeaseLostInput(Protocol):
    """No fields: the lease is gone, and with it the right to checkpoint."""


class ShardEndedInput(Protocol):
    @property
    def checkpointer(self) -> Checkpointer: ...


class ShutdownRequestedInput(Protocol):
    @property
    def checkpointer(self) -> Checkpointer: ...


#: Asked at every batch boundary: a new model and its version when the one to score with has changed, else None.
ModelUpdates = Callable[[], tuple[Model, str] | None]


class RideProcessor(RecordProcessorBase):  # type: ignore[misc]  # amazon_kclpy ships no type hints
    """Scores the rides of one shard. Dependencies are passed in, so the protocol can be driven by tests."""

    def __init__(
        self,
        *,
        model: Model,
        model_version: str,
        predictions: Sink,
        dead_letters: Sink,
        input_stream: str,
        test_run: bool = False,
        max_record_age_seconds: float | None = None,
        batch_deadline_seconds: float | None = None,
        probe_rides: Sequence[Ride] = PROBE_RIDES,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: ShardMetrics | None = None,
        model_updates: ModelUpdates | None = None,
    ) -> None:
        self._model = model
        self._version = model_version
        self._model_updates = model_updates
        self._predictions = predictions
        self._dead_letters = dead_letters
        self._input_stream = input_stream
        self._test_run = test_run
        self._sleep = sleep
        self._max_record_age = max_record_age_seconds
        self._batch_deadline = batch_deadline_seconds
        self._probe = probe_rides
        self._clock = clock
        self._monotonic = monotonic
        self._metrics = metrics or ShardMetrics.create(CollectorRegistry())  # a private registry when not given
        self._shard_id = "unknown"
        self._meter: ShardMeter = self._metrics.for_shard(self._shard_id, clock=clock)
        self._last_written: tuple[str, int] | None = None
        self._last_checkpointed: tuple[str, int] | None = None
        self._log: FilteringBoundLogger = structlog.get_logger()

    # --- The MultiLang lifecycle -------------------------------------------------------------------------

    def initialize(self, initialize_input: InitializeInput) -> None:
        self._shard_id = initialize_input.shard_id
        structlog.contextvars.bind_contextvars(shard_id=self._shard_id, model_version=self._version)
        self._meter = self._metrics.for_shard(self._shard_id, clock=self._clock)
        self._meter.lease_gained()
        self._meter.model_taken_up(self._version)
        self._log.info(
            "shard_initialized",
            sequence_number=initialize_input.sequence_number,
            test_run=self._test_run,
        )

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        records = process_records_input.records
        # Every line logged while this batch is handled (sink and checkpoint retries, a failure) says which one.
        batch: dict[str, int | str] = {"batch_size": len(records)}
        if records:
            batch |= {
                "first_sequence_number": records[0].sequence_number,
                "last_sequence_number": records[-1].sequence_number,
            }
        with structlog.contextvars.bound_contextvars(**batch), self._meter.busy():
            millis_behind_latest: int | None = getattr(process_records_input, "millis_behind_latest", None)
            self._meter.batch_received(len(records), millis_behind_latest)
            try:
                self._process_batch(records, process_records_input.checkpointer)
            except ModelBroken as exc:  # not the rides' fault: none is dead-lettered, the batch is replayed
                self._meter.batch_failed()
                self._meter.model_broken()
                self._stop("model_broken", exc)
            except Exception as exc:  # noqa: BLE001 - returning would let the daemon skip this batch
                self._meter.batch_failed()
                self._stop("batch_failed", exc)

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        # Checkpointing is impossible now; the new owner resumes from our last checkpoint.
        self._meter.lease_dropped()
        self._log.info("lease_lost", last_checkpointed=self._last_checkpointed)

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        # The daemon starts the child shards only after the parent is checkpointed at SHARD_END.
        self._meter.lease_dropped()
        try:
            self._checkpoint(shard_ended_input.checkpointer, None, None)
        except Exception as exc:  # noqa: BLE001
            self._stop("shard_end_checkpoint_failed", exc)
        self._log.info("shard_ended")

    def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        self._meter.lease_dropped()
        if self._test_run or self._last_written is None or self._last_written == self._last_checkpointed:
            self._log.info("shutdown_requested", checkpoint=self._last_checkpointed)
            return
        try:
            self._checkpoint(shutdown_requested_input.checkpointer, *self._last_written)
        except Exception as exc:  # noqa: BLE001
            self._stop("shutdown_checkpoint_failed", exc)
        self._log.info("shutdown_requested", checkpoint=self._last_checkpointed)

    # --- One batch ------------------------------------------------------------------------------------------

    def _process_batch(self, records: Sequence[KclRecord], checkpointer: Checkpointer) -> None:
        if not records:
            return
        self._follow_model()
        deadline = Deadline(self._batch_deadline, clock=self._monotonic)
        started = time.perf_counter()
        accepted, rejected = decode_records(records, self._shard_id)
        for item in accepted:
            if item.unusual:
                self._log.debug("unusual_ride", kinds=item.unusual, sequence_number=item.source.sequence_number)
        fresh, stale = expire_stale(
            accepted, now_millis=int(self._clock() * 1000), max_age_seconds=self._max_record_age
        )
        with self._meter.scoring():
            scored, failed = score(self._model, fresh, probe=self._probe, deadline=deadline)
        dead = rejected + stale + failed
        unusual = [kind for item in accepted for kind in item.unusual]
        encoded = encode(scored, dead, version=self._version, input_stream=self._input_stream)
        last = (records[-1].sequence_number, records[-1].sub_sequence_number)
        log = self._log.bind(
            batch_size=len(records),
            first_sequence_number=records[0].sequence_number,
            last_sequence_number=last[0],
        )
        newest = max(record.timestamp_millis for record in records)
        self._meter.predicted(self._version, (item.duration for item in scored))
        if self._test_run:
            log.info("batch_scored_dry_run", predicted=len(scored), dead_lettered=len(encoded.dead_letters))
            self._meter.batch_done(
                predictions=0,
                dead_letter_reasons=(),
                unusual_kinds=unusual,
                newest_arrival_millis=newest,
                seconds=time.perf_counter() - started,
            )
            return
        if encoded.dead_letters:
            with self._meter.put("dead_letters"):
                self._dead_letters.put(encoded.dead_letters, deadline=deadline)
        if encoded.predictions:
            with self._meter.put("predictions"):
                self._predictions.put(encoded.predictions, deadline=deadline)
        self._last_written = last
        self._checkpoint(checkpointer, *last, deadline=deadline)
        seconds = time.perf_counter() - started
        self._meter.batch_done(
            predictions=len(encoded.predictions),
            dead_letter_reasons=[item.reason for item in dead],
            unusual_kinds=unusual,
            newest_arrival_millis=newest,
            seconds=seconds,
        )
        log.info(
            "batch_done",
            predicted=len(encoded.predictions),
            dead_lettered=len(encoded.dead_letters),
            stale=len(stale),
            seconds=round(seconds, 4),
        )

    def _follow_model(self) -> None:
        """Between two batches: take up the model the launcher published last, if it changed."""
        update = self._model_updates() if self._model_updates is not None else None
        if update is None:
            return
        previous = self._version
        self._model, self._version = update
        if self._version == previous:
            return
        structlog.contextvars.bind_contextvars(model_version=self._version)
        self._meter.model_taken_up(self._version, previous)
        self._log.info("model_switched", previous_version=previous)

    def _checkpoint(
        self,
        checkpointer: Checkpointer,
        sequence_number: str | None,
        sub_sequence_number: int | None,
        *,
        deadline: Deadline | None = None,
    ) -> None:
        """Checkpoint at a record (None: at SHARD_END, the end of what was delivered), within ``deadline``."""
        try:
            outcome = checkpoint(
                checkpointer, sequence_number, sub_sequence_number, sleep=self._sleep, log=self._log, deadline=deadline
            )
        except CheckpointFailed as exc:
            self._meter.checkpoint_failed(exc.error)
            raise
        if outcome is Checkpointed.LEASE_LOST:
            self._meter.checkpoint_failed("ShutdownException")
            self._log.warning("checkpoint_lease_lost", sequence_number=sequence_number)
            return
        self._meter.checkpointed()
        if sequence_number is not None and sub_sequence_number is not None:
            self._last_checkpointed = (sequence_number, sub_sequence_number)

    def _stop(self, event: str, exc: BaseException) -> NoReturn:
        """Exit non-zero so the daemon stops and the batch is replayed from the last checkpoint."""
        self._log.error(
            event,
            error=f"{type(exc).__name__}: {exc}",
            last_checkpointed=self._last_checkpointed,
            exc_info=exc,
        )
        sys.stderr.flush()
        raise SystemExit(1)
