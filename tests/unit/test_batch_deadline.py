"""One deadline per batch (BATCH_DEADLINE_SECONDS): scoring, every PutRecords chunk with its retries and backoff
across both sinks, and the checkpoint's retries all end by it, on a fake clock; the launcher refuses a deadline
that does not fit under the daemon's timeoutInSeconds."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import orjson
import pytest
from amazon_kclpy.checkpoint_error import CheckpointError
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry

from consumer.errors import BatchDeadlineExceeded, DaemonSetupError
from consumer.pipeline.checkpointing import checkpoint
from consumer.pipeline.deadline import Deadline
from consumer.pipeline.meter import ShardMetrics
from consumer.pipeline.processor import RideProcessor
from consumer.pipeline.sink import Entry, KinesisSink
from consumer.runtime.daemon import parse_properties
from consumer.runtime.launcher import DEADLINE_MARGIN_SECONDS, check_batch_deadline
from consumer.runtime.logs import configure_logging
from consumer.runtime.resources import PROPERTIES_TEMPLATE
from consumer.runtime.settings import Settings
from tests.support.factories import FakeRecord, ride_payload

#: The daemon's timeoutInSeconds in the packaged properties.
TIMEOUT_IN_SECONDS = 180


@dataclass
class Clock:
    """A fake monotonic clock; ``sleep`` moves it on."""

    now: float = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class ThrottledKinesis:
    """Every PutRecords call takes ``seconds`` (a read timeout) and is throttled as a whole, except every
    ``succeed_every``-th call, which writes everything (never when None)."""

    clock: Clock
    seconds: float = 10.0
    succeed_every: int | None = None
    starts: list[float] = field(default_factory=list)

    def put_records(self, *, StreamName: str, Records: list[dict]) -> dict:
        self.starts.append(self.clock.now)
        self.clock.now += self.seconds
        if self.succeed_every and len(self.starts) % self.succeed_every == 0:
            return {"Records": [{"SequenceNumber": str(i), "ShardId": "s"} for i in range(len(Records))]}
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, "PutRecords"
        )


@dataclass
class SlowKinesis:
    """Every PutRecords call takes ``seconds`` and succeeds."""

    clock: Clock
    seconds: float
    calls: int = 0

    def put_records(self, *, StreamName: str, Records: list[dict]) -> dict:
        self.clock.now += self.seconds
        self.calls += 1
        return {"Records": [{"SequenceNumber": str(i), "ShardId": "s"} for i in range(len(Records))]}


class Checkpointer:
    def __init__(self, clock: Clock, errors: list[str] | None = None) -> None:
        self.clock = clock
        self.errors = list(errors or [])
        self.calls = 0

    def checkpoint(self, sequence_number: str | None = None, sub_sequence_number: int | None = None) -> None:
        self.calls += 1
        self.clock.now += 1.0
        if self.errors:
            raise CheckpointError(self.errors.pop(0))


class Model:
    def predict(self, rides):
        return [12.5 for _ in rides]


@dataclass
class Input:
    records: list | None = None
    checkpointer: object = None
    shard_id: str = "shardId-000000000000"
    sequence_number: str = "TRIM_HORIZON"


def entries(count: int) -> list[Entry]:
    return [Entry(b"x", str(index)) for index in range(count)]


def processor(clock: Clock, predictions, dead_letters, deadline: float | None, stream: io.StringIO) -> RideProcessor:
    configure_logging("INFO", stream=stream, component="record_processor")
    ride_processor = RideProcessor(
        model=Model(),
        model_version="1",
        predictions=predictions,
        dead_letters=dead_letters,
        input_stream="rides",
        batch_deadline_seconds=deadline,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        metrics=ShardMetrics.create(CollectorRegistry()),
    )
    ride_processor.initialize(Input())
    return ride_processor


def thousand_rides_and_poison() -> list[FakeRecord]:
    """A full default batch: 1,000 rides (two PutRecords chunks) and 5 poison records (one more chunk)."""
    payloads = [ride_payload(index) for index in range(1000)] + [b"{not json"] * 5
    return [FakeRecord(payload, str(100 + index)) for index, payload in enumerate(payloads)]


def test_the_deadline_stops_a_sink_before_a_backoff_that_would_end_after_it():
    clock = Clock()
    kinesis = ThrottledKinesis(clock)
    sink = KinesisSink(kinesis, "out", max_attempts=30, backoff_max_seconds=5.0, sleep=clock.sleep)

    with pytest.raises(BatchDeadlineExceeded, match=r"passed while writing to out: 3 of 3 records still not written"):
        sink.put(entries(3), deadline=Deadline(60.0, clock=clock.monotonic))
    assert max(kinesis.starts) < 60.0
    assert clock.now <= 60.0 + kinesis.seconds  # the last call, begun before the deadline, ran to its end
    assert len(kinesis.starts) < 30


def test_no_put_records_call_starts_after_the_deadline():
    clock = Clock()
    kinesis = SlowKinesis(clock, seconds=50.0)
    sink = KinesisSink(kinesis, "out", sleep=clock.sleep)

    with pytest.raises(BatchDeadlineExceeded, match="passed before PutRecords to out"):
        sink.put(entries(1200), deadline=Deadline(60.0, clock=clock.monotonic))
    assert kinesis.calls == 2  # the third chunk would start at 100 s


def test_the_deadline_stops_the_checkpoint_retries():
    clock = Clock()
    checkpointer = Checkpointer(clock, ["ThrottlingException"] * 20)

    with pytest.raises(BatchDeadlineExceeded, match="passed while checkpointing at 42"):
        checkpoint(
            checkpointer, "42", 0, max_attempts=20, sleep=clock.sleep, deadline=Deadline(10.0, clock=clock.monotonic)
        )
    assert clock.now <= 10.0


def test_a_batch_whose_writes_outlast_the_deadline_stops_the_shard_without_a_checkpoint():
    clock = Clock()
    stream = io.StringIO()
    kinesis = ThrottledKinesis(clock, succeed_every=8)  # each chunk takes nearly its whole budget
    sinks = [KinesisSink(kinesis, name, sleep=clock.sleep) for name in ("predictions", "dead-letters")]
    ride_processor = processor(clock, *sinks, deadline=120.0, stream=stream)
    checkpointer = Checkpointer(clock)

    with pytest.raises(SystemExit) as exited:
        ride_processor.process_records(Input(thousand_rides_and_poison(), checkpointer))

    assert exited.value.code == 1
    assert checkpointer.calls == 0
    assert max(kinesis.starts) < 120.0
    assert clock.now <= 120.0 + kinesis.seconds  # at most the call in flight when the deadline passed
    failed = [line for line in map(orjson.loads, stream.getvalue().splitlines()) if line["event"] == "batch_failed"]
    assert "BATCH_DEADLINE_SECONDS" in failed[0]["error"]
    assert "predictions" in failed[0]["error"]  # the dead letters were written; the first prediction chunk was not


def test_without_one_deadline_the_per_chunk_budgets_outlast_the_daemons_timeout():
    """Why the deadline exists: each of three chunks over two sinks within its own budget, the batch finishes
    long after timeoutInSeconds: the daemon would have halted instead of the shard stopping cleanly."""
    clock = Clock()
    kinesis = ThrottledKinesis(clock, succeed_every=8)
    sinks = [KinesisSink(kinesis, name, sleep=clock.sleep) for name in ("predictions", "dead-letters")]
    ride_processor = processor(clock, *sinks, deadline=None, stream=io.StringIO())
    checkpointer = Checkpointer(clock)

    ride_processor.process_records(Input(thousand_rides_and_poison(), checkpointer))

    assert len(kinesis.starts) == 3 * 8
    assert checkpointer.calls == 1
    assert clock.now > TIMEOUT_IN_SECONDS


def test_a_checkpoint_retried_past_the_deadline_fails_the_batch():
    clock = Clock()
    sinks = [KinesisSink(SlowKinesis(clock, 1.0), name, sleep=clock.sleep) for name in ("predictions", "dead")]
    ride_processor = processor(clock, *sinks, deadline=20.0, stream=io.StringIO())
    clock.now = 0.0
    checkpointer = Checkpointer(clock, ["ThrottlingException"] * 7)

    with pytest.raises(SystemExit) as exited:
        ride_processor.process_records(Input([FakeRecord(ride_payload(1), "100")], checkpointer))

    assert exited.value.code == 1
    assert 1 <= checkpointer.calls < 8
    assert clock.now <= 20.0 + 1.0


def test_a_batch_within_its_deadline_is_written_and_checkpointed():
    clock = Clock()
    sinks = [KinesisSink(SlowKinesis(clock, 5.0), name, sleep=clock.sleep) for name in ("predictions", "dead")]
    ride_processor = processor(clock, *sinks, deadline=120.0, stream=io.StringIO())
    checkpointer = Checkpointer(clock, ["ThrottlingException"])

    ride_processor.process_records(Input(thousand_rides_and_poison(), checkpointer))

    assert checkpointer.calls == 2


@pytest.mark.parametrize("deadline", [60.0, 120.0, TIMEOUT_IN_SECONDS - DEADLINE_MARGIN_SECONDS])
def test_a_deadline_that_leaves_the_margin_below_timeout_in_seconds_is_accepted(deadline):
    check_batch_deadline(deadline, {"timeoutInSeconds": str(TIMEOUT_IN_SECONDS)})


@pytest.mark.parametrize("deadline", [TIMEOUT_IN_SECONDS - DEADLINE_MARGIN_SECONDS + 1, 180.0, 600.0])
def test_a_deadline_too_close_to_timeout_in_seconds_stops_start_up_naming_both(deadline):
    with pytest.raises(DaemonSetupError, match=r"BATCH_DEADLINE_SECONDS=.*timeoutInSeconds=180"):
        check_batch_deadline(deadline, {"timeoutInSeconds": str(TIMEOUT_IN_SECONDS)})


def test_without_timeout_in_seconds_any_deadline_fits():
    check_batch_deadline(3600.0, {"streamName": "rides"})


def test_the_default_deadline_fits_the_packaged_properties(env):
    properties = parse_properties(PROPERTIES_TEMPLATE.read_text())

    check_batch_deadline(Settings().batch_deadline_seconds, properties)
    assert properties["timeoutInSeconds"] == str(TIMEOUT_IN_SECONDS)
