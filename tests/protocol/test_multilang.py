"""record_processor.py speaks the MultiLang protocol: exact replies, checkpoints only after writes, stdout clean."""

from __future__ import annotations

import base64
import json

import orjson

from consumer.tools.tail import read_all
from tests.support.factories import ride_payload

SHARD = "shardId-000000000007"


def record(payload: bytes, sequence: int, key: str = "k") -> dict:
    return {
        "action": "record",
        "data": base64.b64encode(payload).decode(),
        "partitionKey": key,
        "sequenceNumber": str(49_000_000_000 + sequence),
        "subSequenceNumber": 0,
        "approximateArrivalTimestamp": 1_700_000_000_000 + sequence,
    }


def initialize(processor) -> None:
    processor.send({"action": "initialize", "shardId": SHARD, "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0})
    assert processor.receive() == {"action": "status", "responseFor": "initialize"}


def process(processor, records: list[dict]) -> None:
    processor.send({"action": "processRecords", "records": records, "millisBehindLatest": 1500})


def answer_checkpoint(processor, error: str | None = None) -> dict:
    asked = processor.receive()
    assert asked is not None and asked["action"] == "checkpoint", asked
    processor.send(
        {
            "action": "checkpoint",
            "sequenceNumber": asked["sequenceNumber"],
            "subSequenceNumber": asked["subSequenceNumber"],
            "error": error,
        }
    )
    return asked


POISON = [b"\xff\xfe", b"{not json", b'{"ride": {"PULocationID": 1}, "ride_id": 9}']


def test_a_batch_is_written_then_checkpointed_at_its_last_record(start_processor, local_stack, streams):
    processor = start_processor()
    initialize(processor)
    batch = [record(ride_payload(ride_id), ride_id, str(ride_id)) for ride_id in range(1, 6)]
    batch += [record(payload, 100 + index) for index, payload in enumerate(POISON)]
    process(processor, batch)
    asked = answer_checkpoint(processor)
    assert asked == {"action": "checkpoint", "sequenceNumber": batch[-1]["sequenceNumber"], "subSequenceNumber": 0}
    assert processor.receive() == {"action": "status", "responseFor": "processRecords"}

    kinesis = local_stack.kinesis_client()
    predictions = read_all(kinesis, streams.predictions, expect=5, timeout=20)
    dead = read_all(kinesis, streams.dead_letters, expect=3, timeout=20)
    assert sorted(item.event["prediction"]["ride_id"] for item in predictions) == [1, 2, 3, 4, 5]
    assert {item.event["version"] for item in predictions} == {"42"}
    assert {item.event["model"] for item in predictions} == {"ride_duration_prediction_model"}
    assert all(item.event["event_id"].startswith(SHARD + ":") for item in predictions)
    assert sorted(base64.b64decode(item.event["payload_base64"]) for item in dead) == sorted(POISON)
    assert sorted(item.event["reason"] for item in dead) == ["missing_field", "not_json", "not_utf8"]

    processor.send({"action": "shutdownRequested"})
    assert processor.receive() == {"action": "status", "responseFor": "shutdownRequested"}  # already checkpointed
    processor.send({"action": "leaseLost"})
    assert processor.receive() == {"action": "status", "responseFor": "leaseLost"}
    assert processor.exit_code() == 0
    assert all(json.loads(line)["action"] for line in processor.stdout_lines if line.strip())
    assert any(
        event.get("event") == "batch_done" and event.get("shard_id") == SHARD for event in processor.log_events()
    )


def test_a_throttled_checkpoint_is_retried(start_processor):
    processor = start_processor()
    initialize(processor)
    process(processor, [record(ride_payload(1), 1)])
    first = answer_checkpoint(processor, error="ThrottlingException")
    second = answer_checkpoint(processor)
    assert first == second
    assert processor.receive() == {"action": "status", "responseFor": "processRecords"}


def test_an_invalid_state_at_checkpoint_stops_the_process(start_processor):
    processor = start_processor()
    initialize(processor)
    process(processor, [record(ride_payload(1), 1)])
    answer_checkpoint(processor, error="InvalidStateException")
    assert processor.receive() is None  # no status: the daemon must not move on to the next batch
    assert processor.exit_code() == 1
    assert any(event.get("event") == "batch_failed" for event in processor.log_events())


def test_a_missing_output_stream_stops_the_process_before_any_checkpoint(start_processor):
    processor = start_processor(PREDICTIONS_STREAM_NAME="no-such-stream")
    initialize(processor)
    process(processor, [record(ride_payload(1), 1)])
    assert processor.receive() is None
    assert processor.exit_code() == 1
    failure = next(event for event in processor.log_events() if event.get("event") == "batch_failed")
    assert "no-such-stream" in failure["error"]
    assert "ResourceNotFoundException" in failure["error"]


def test_a_shard_end_is_checkpointed_without_a_sequence_number(start_processor):
    processor = start_processor()
    initialize(processor)
    processor.send({"action": "shardEnded"})
    asked = answer_checkpoint(processor)
    assert asked["sequenceNumber"] is None
    assert processor.receive() == {"action": "status", "responseFor": "shardEnded"}


def test_a_lease_loss_does_not_checkpoint(start_processor):
    processor = start_processor()
    initialize(processor)
    processor.send({"action": "leaseLost"})
    assert processor.receive() == {"action": "status", "responseFor": "leaseLost"}


def test_a_dry_run_scores_but_writes_and_checkpoints_nothing(start_processor, local_stack, streams):
    processor = start_processor(TEST_RUN="true")
    initialize(processor)
    process(processor, [record(ride_payload(1), 1), record(b"junk", 2)])
    assert processor.receive() == {"action": "status", "responseFor": "processRecords"}
    processor.send({"action": "shutdownRequested"})
    assert processor.receive() == {"action": "status", "responseFor": "shutdownRequested"}
    kinesis = local_stack.kinesis_client()
    assert read_all(kinesis, streams.predictions, expect=None, timeout=1) == []
    dry = next(event for event in processor.log_events() if event.get("event") == "batch_scored_dry_run")
    assert (dry["predicted"], dry["dead_lettered"]) == (1, 1)


def test_a_bad_setting_stops_the_processor_naming_it(start_processor):
    processor = start_processor(KCL_MAX_RECORDS="0")
    assert processor.exit_code() == 2
    assert "KCL_MAX_RECORDS" in processor.stderr
    assert processor.stdout_lines == []


def test_nothing_but_protocol_reaches_stdout_even_with_debug_logs(start_processor):
    processor = start_processor(LOG_LEVEL="DEBUG")
    initialize(processor)
    process(processor, [record(ride_payload(i), i) for i in range(50)])
    answer_checkpoint(processor)
    assert processor.receive() == {"action": "status", "responseFor": "processRecords"}
    assert processor.exit_code() == 0
    for line in processor.stdout_lines:
        if line.strip():
            assert orjson.loads(line)["action"] in {"status", "checkpoint"}
