"""MAX_RECORD_AGE_SECONDS reaches the record processor: a ride older than the limit is dead-lettered as stale,
a fresh one is scored, and the batch is checkpointed as usual."""

from __future__ import annotations

import base64
import time

from consumer.tools.tail import read_all
from tests.protocol.test_multilang import answer_checkpoint, initialize, process, record
from tests.support.factories import ride_payload


def test_a_ride_older_than_the_maximum_age_is_dead_lettered_as_stale(start_processor, local_stack, streams):
    processor = start_processor(MAX_RECORD_AGE_SECONDS="600")
    initialize(processor)
    old = record(ride_payload(1), 1, "1")  # arrived in November 2023
    fresh = {**record(ride_payload(2), 2, "2"), "approximateArrivalTimestamp": int(time.time() * 1000)}
    process(processor, [old, fresh])
    assert answer_checkpoint(processor)["sequenceNumber"] == fresh["sequenceNumber"]
    assert processor.receive() == {"action": "status", "responseFor": "processRecords"}

    kinesis = local_stack.kinesis_client()
    predictions = read_all(kinesis, streams.predictions, expect=1, timeout=20)
    dead = read_all(kinesis, streams.dead_letters, expect=1, timeout=20)
    assert [item.event["prediction"]["ride_id"] for item in predictions] == [2]
    assert [(item.event["reason"], base64.b64decode(item.event["payload_base64"])) for item in dead] == [
        ("stale", ride_payload(1))
    ]
    assert "maximum record age" in dead[0].event["detail"]
