"""What the record processor records for Prometheus, and what its log lines carry, batch by batch."""

from __future__ import annotations

import io

import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumer.errors import SinkError
from consumer.pipeline.meter import ShardMetrics
from consumer.pipeline.processor import RideProcessor
from consumer.pipeline.sink import MemorySink
from consumer.runtime.logs import configure_logging, get_logger
from tests.support.factories import FakeRecord, ride_payload, ride_processor
from tests.support.fakes import FakeCheckpointer, FakeInput

SHARD = FakeInput.shard_id


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def sinks() -> dict[str, MemorySink]:
    return {"predictions": MemorySink("predictions"), "dead_letters": MemorySink("dead")}


@pytest.fixture
def processor(registry, sinks) -> RideProcessor:
    processor = ride_processor(**sinks, metrics=ShardMetrics.create(registry))
    processor.initialize(FakeInput())
    return processor


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def batch(*payloads: bytes, first: int = 100, arrived: int = 1_700_000_000_000) -> list[FakeRecord]:
    return [
        FakeRecord(payload, str(first + index), timestamp_millis=arrived + index)
        for index, payload in enumerate(payloads)
    ]


def test_a_batch_counts_records_in_predictions_and_dead_letters_by_reason(processor, registry):
    records = batch(ride_payload(1), ride_payload(2), b"{not json", b"\xff", ride_payload("x" * 257))
    processor.process_records(FakeInput(records, FakeCheckpointer(), millis_behind_latest=2500))

    assert value(registry, "ride_consumer_records_received_total", shard_id=SHARD) == 5
    assert value(registry, "ride_consumer_predictions_written_total", shard_id=SHARD) == 2
    dead = {
        reason: value(registry, "ride_consumer_dead_letters_total", shard_id=SHARD, reason=reason)
        for reason in ("not_json", "not_utf8", "ride_id_too_long", "model_error")
    }
    assert dead == {"not_json": 1, "not_utf8": 1, "ride_id_too_long": 1, "model_error": 0}
    assert value(registry, "ride_consumer_batches_total", shard_id=SHARD) == 1
    assert value(registry, "ride_consumer_checkpoints_total", shard_id=SHARD) == 1
    assert value(registry, "ride_consumer_batch_size_records_sum", shard_id=SHARD) == 5
    assert value(registry, "ride_consumer_scoring_duration_seconds_count", shard_id=SHARD) == 1
    assert value(registry, "ride_consumer_batch_duration_seconds_count", shard_id=SHARD) == 1
    assert value(registry, "ride_consumer_put_duration_seconds_count", sink="predictions") == 1
    assert value(registry, "ride_consumer_put_duration_seconds_count", sink="dead_letters") == 1


def test_rides_with_unusual_values_are_predicted_and_counted_by_kind(processor, registry, sinks):
    records = batch(ride_payload(1, distance=1_500.0), ride_payload(2, distance=-1.0), ride_payload(3, pu=0, do=266))
    processor.process_records(FakeInput(records, FakeCheckpointer()))

    assert len(sinks["predictions"].written) == 3
    assert sinks["dead_letters"].written == []
    unusual = {
        kind: value(registry, "ride_consumer_unusual_rides_total", shard_id=SHARD, kind=kind)
        for kind in ("long_distance", "negative_distance", "unknown_zone")
    }
    assert unusual == {"long_distance": 1, "negative_distance": 1, "unknown_zone": 1}


def test_the_unusual_and_model_broken_counters_exist_at_zero_from_the_first_lease(processor, registry):
    for kind in ("long_distance", "negative_distance", "unknown_zone"):
        assert value(registry, "ride_consumer_unusual_rides_total", shard_id=SHARD, kind=kind) == 0
    assert value(registry, "ride_consumer_model_broken_total", shard_id=SHARD) == 0


def test_lag_and_the_newest_arrival_come_from_the_last_batch(processor, registry):
    processor.process_records(FakeInput(batch(ride_payload(1), arrived=1_700_000_000_000), FakeCheckpointer(), 90_000))
    processor.process_records(
        FakeInput(
            batch(ride_payload(2), ride_payload(3), first=200, arrived=1_700_000_050_000), FakeCheckpointer(), 1_500
        )
    )
    assert value(registry, "ride_consumer_seconds_behind_latest", shard_id=SHARD) == 1.5
    assert value(registry, "ride_consumer_newest_record_timestamp_seconds", shard_id=SHARD) == 1_700_000_050.001


def test_a_lease_is_held_from_initialize_until_it_is_lost_ended_or_shut_down(processor, registry):
    assert value(registry, "ride_consumer_leases_held", shard_id=SHARD) == 1
    assert value(registry, "ride_consumer_records_received_total", shard_id=SHARD) == 0  # there before any batch
    processor.lease_lost(FakeInput())
    assert value(registry, "ride_consumer_leases_held", shard_id=SHARD) == 0

    processor.initialize(FakeInput())
    processor.shard_ended(FakeInput(checkpointer=FakeCheckpointer()))
    assert value(registry, "ride_consumer_leases_held", shard_id=SHARD) == 0
    assert value(registry, "ride_consumer_checkpoints_total", shard_id=SHARD) == 1  # at SHARD_END

    processor.initialize(FakeInput())
    processor.shutdown_requested(FakeInput(checkpointer=FakeCheckpointer()))
    assert value(registry, "ride_consumer_leases_held", shard_id=SHARD) == 0


def test_a_processor_is_busy_only_inside_a_call(registry, sinks):
    seen: list[float | None] = []

    class Watching:
        def predict(self, rides):
            seen.append(value(registry, "ride_consumer_processor_busy_since_timestamp_seconds", shard_id=SHARD))
            return [1.0 for _ in rides]

    processor = ride_processor(
        model=Watching(), **sinks, metrics=ShardMetrics.create(registry), clock=lambda: 1_800_000_000.0
    )
    processor.initialize(FakeInput())
    processor.process_records(FakeInput(batch(ride_payload(1)), FakeCheckpointer()))
    assert seen == [1_800_000_000.0]
    assert value(registry, "ride_consumer_processor_busy_since_timestamp_seconds", shard_id=SHARD) == 0


def test_a_lost_lease_at_checkpoint_and_a_refused_checkpoint_are_counted_by_error(processor, registry):
    processor.process_records(FakeInput(batch(ride_payload(1)), FakeCheckpointer("ShutdownException")))
    assert value(registry, "ride_consumer_checkpoint_failures_total", shard_id=SHARD, error="ShutdownException") == 1

    with pytest.raises(SystemExit):
        processor.process_records(
            FakeInput(batch(ride_payload(2), first=300), FakeCheckpointer("InvalidStateException"))
        )
    failures = value(registry, "ride_consumer_checkpoint_failures_total", shard_id=SHARD, error="InvalidStateException")
    assert failures == 1
    assert value(registry, "ride_consumer_batch_failures_total", shard_id=SHARD) == 1


def test_a_put_that_gives_up_counts_as_a_put_failure_and_a_batch_failure(processor, registry, sinks):
    sinks["predictions"].fail_with = SinkError("throttled", stream_name="predictions", unwritten=1, retryable=True)
    with pytest.raises(SystemExit):
        processor.process_records(FakeInput(batch(ride_payload(1)), FakeCheckpointer()))
    assert value(registry, "ride_consumer_put_failures_total", sink="predictions") == 1
    assert value(registry, "ride_consumer_batch_failures_total", shard_id=SHARD) == 1
    assert value(registry, "ride_consumer_batches_total", shard_id=SHARD) == 0
    assert value(registry, "ride_consumer_predictions_written_total", shard_id=SHARD) == 0


def test_every_line_logged_during_a_batch_names_the_shard_the_batch_and_the_model_version(registry, sinks):
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, component="record_processor")

    class Logging(MemorySink):
        def put(self, entries, *, deadline=None):
            get_logger().warning("put_records_retry", attempt=1)  # what KinesisSink logs between attempts
            return super().put(entries, deadline=deadline)

    processor = ride_processor(predictions=Logging("predictions"), metrics=ShardMetrics.create(registry))
    processor.initialize(FakeInput())
    processor.process_records(FakeInput(batch(ride_payload(1), ride_payload(2), first=500), FakeCheckpointer()))
    processor.shutdown_requested(FakeInput(checkpointer=FakeCheckpointer()))

    events = {line["event"]: line for line in map(orjson.loads, stream.getvalue().splitlines())}
    expected = {
        "shard_id": SHARD,
        "model_version": "7",
        "batch_size": 2,
        "first_sequence_number": "500",
        "last_sequence_number": "501",
    }
    for event in ("put_records_retry", "batch_done"):
        assert {key: events[event].get(key) for key in expected} == expected, event
    assert "batch_size" not in events["shutdown_requested"]  # the batch's fields end with the batch
    assert events["shutdown_requested"]["shard_id"] == SHARD


def test_a_model_broken_on_a_whole_batch_stops_the_shard_without_dead_letters_or_a_checkpoint(registry, sinks):
    class Broken:
        def predict(self, rides):
            raise MemoryError("cannot allocate")

    stream = io.StringIO()
    configure_logging("INFO", stream=stream, component="record_processor")
    processor = RideProcessor(
        model=Broken(),
        model_version="7",
        predictions=sinks["predictions"],
        dead_letters=sinks["dead_letters"],
        input_stream="rides",
        metrics=ShardMetrics.create(registry),
    )
    processor.initialize(FakeInput())
    checkpointer = FakeCheckpointer()

    with pytest.raises(SystemExit) as exited:
        processor.process_records(FakeInput(batch(ride_payload(1)), checkpointer))

    assert exited.value.code == 1
    assert checkpointer.calls == []
    assert sinks["predictions"].written == sinks["dead_letters"].written == []
    assert value(registry, "ride_consumer_model_broken_total", shard_id=SHARD) == 1
    assert value(registry, "ride_consumer_batch_failures_total", shard_id=SHARD) == 1
    assert value(registry, "ride_consumer_dead_letters_total", shard_id=SHARD, reason="model_error") == 0
    [line] = [line for line in map(orjson.loads, stream.getvalue().splitlines()) if line["event"] == "model_broken"]
    assert line["level"] == "error"
    assert "MemoryError: cannot allocate" in line["error"]
