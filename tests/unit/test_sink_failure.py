"""The core invariant at unit level: when a write to an output stream fails (SinkError), the batch is never
checkpointed and the record processor exits non-zero, so the daemon stops and the batch is replayed from the last
checkpoint (consumer/pipeline/processor.py). tests/faults proves the same on the real daemon."""

from __future__ import annotations

import base64
import io
import json

import pytest
from amazon_kclpy.kcl import KCLProcess

from consumer.errors import SinkError
from consumer.pipeline.sink import MemorySink
from tests.support.factories import records, ride_payload, ride_processor
from tests.support.fakes import FakeCheckpointer, FakeInput

#: Two rides to score and one record to dead-letter: a batch that writes to both output streams.
BATCH = [ride_payload(1), b"{not json", ride_payload(2)]


def failing(stream_name: str, *, retryable: bool) -> MemorySink:
    error = SinkError("PutRecords gave up", stream_name=stream_name, unwritten=1, retryable=retryable)
    return MemorySink(stream_name, fail_with=error)


@pytest.mark.parametrize("retryable", [True, False], ids=["retries exhausted", "not retryable"])
@pytest.mark.parametrize("failing_sink", ["predictions", "dead_letters"])
def test_a_failed_write_never_checkpoints_and_stops_the_processor_with_status_1(failing_sink, retryable):
    sinks = {"predictions": MemorySink("predictions"), "dead_letters": MemorySink("dead_letters")}
    sinks[failing_sink] = failing(failing_sink, retryable=retryable)
    processor = ride_processor(**sinks)
    processor.initialize(FakeInput())
    checkpointer = FakeCheckpointer()

    with pytest.raises(SystemExit) as stopped:
        processor.process_records(FakeInput(records(*BATCH), checkpointer))

    assert stopped.value.code == 1
    assert checkpointer.calls == []


def test_after_a_failed_write_a_shutdown_checkpoints_nothing_of_that_batch():
    processor = ride_processor(predictions=failing("predictions", retryable=True))
    processor.initialize(FakeInput())
    with pytest.raises(SystemExit):
        processor.process_records(FakeInput(records(*BATCH), FakeCheckpointer()))
    checkpointer = FakeCheckpointer()

    processor.shutdown_requested(FakeInput(checkpointer=checkpointer))

    assert checkpointer.calls == []


def multilang(action: str, **fields: object) -> str:
    return json.dumps({"action": action, **fields}) + "\n"


def test_over_the_multilang_protocol_a_failed_write_asks_for_no_checkpoint_and_ends_the_process_with_1():
    kcl_records = [
        {
            "action": "record",
            "data": base64.b64encode(payload).decode(),
            "partitionKey": str(index),
            "sequenceNumber": str(49_000 + index),
            "subSequenceNumber": 0,
            "approximateArrivalTimestamp": 1_700_000_000_000,
        }
        for index, payload in enumerate(BATCH)
    ]
    stdin = io.StringIO(
        multilang("initialize", shardId="shardId-000000000001", sequenceNumber="TRIM_HORIZON", subSequenceNumber=0)
        + multilang("processRecords", records=kcl_records, millisBehindLatest=0)
        # A daemon that went on regardless would answer a checkpoint and send more; none of it must be read.
        + multilang("checkpoint", sequenceNumber=str(49_002), subSequenceNumber=0, error=None)
    )
    stdout, stderr = io.StringIO(), io.StringIO()
    processor = ride_processor(predictions=failing("predictions", retryable=True))

    with pytest.raises(SystemExit) as stopped:
        KCLProcess(processor, input_file=stdin, output_file=stdout, error_file=stderr).run()

    assert stopped.value.code == 1
    sent = [json.loads(line) for line in stdout.getvalue().splitlines() if line.strip()]
    assert sent == [{"action": "status", "responseFor": "initialize"}]
