"""PutRecords partial failures: only the failed entries are resent, matched by index, with capped backoff."""

from __future__ import annotations

import random

import pytest
from botocore.stub import Stubber

from consumer.errors import SinkError
from consumer.replay import (
    MAX_REQUEST_BYTES,
    MAX_REQUEST_RECORDS,
    PutRecordsFailed,
    RetryPolicy,
    chunk_entries,
    put_records_resending_failed,
)
from consumer.streams import kinesis_client

STREAM = "rides"


def ok(shard: str, sequence: str) -> dict[str, str]:
    return {"ShardId": shard, "SequenceNumber": sequence}


def throttled() -> dict[str, str]:
    return {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"}


def internal() -> dict[str, str]:
    return {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."}


def request(entries: list[tuple[bytes, str]]) -> dict[str, object]:
    return {"StreamName": STREAM, "Records": [{"Data": data, "PartitionKey": key} for data, key in entries]}


@pytest.fixture
def stubbed():
    client = kinesis_client("http://127.0.0.1:9", credentials=True)  # never reached: the Stubber answers
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


ENTRIES = [(f"ride-{i}".encode(), str(i)) for i in range(5)]


def test_only_failed_entries_are_resent_in_their_original_order(stubbed):
    client, stubber = stubbed
    stubber.add_response(
        "put_records",
        {"FailedRecordCount": 2, "Records": [ok("s0", "1"), throttled(), ok("s1", "2"), internal(), ok("s0", "3")]},
        request(ENTRIES),
    )
    stubber.add_response(
        "put_records",
        {"FailedRecordCount": 1, "Records": [ok("s1", "4"), throttled()]},
        request([ENTRIES[1], ENTRIES[3]]),
    )
    stubber.add_response("put_records", {"Records": [ok("s1", "5")]}, request([ENTRIES[3]]))
    sleeps: list[float] = []

    results, resent = put_records_resending_failed(client, STREAM, ENTRIES, sleep=sleeps.append)

    assert [(r.shard_id, r.sequence_number) for r in results] == [
        ("s0", "1"),
        ("s1", "4"),
        ("s1", "2"),
        ("s1", "5"),
        ("s0", "3"),
    ]
    assert resent == 3
    assert len(sleeps) == 2


def test_a_fully_written_request_is_sent_once_without_waiting(stubbed):
    client, stubber = stubbed
    records = [ok("s0", str(i)) for i in range(len(ENTRIES))]
    stubber.add_response("put_records", {"Records": records}, request(ENTRIES))
    sleeps: list[float] = []

    results, resent = put_records_resending_failed(client, STREAM, ENTRIES, sleep=sleeps.append)

    assert len(results) == len(ENTRIES)
    assert resent == 0
    assert sleeps == []


def test_entries_still_failing_after_the_last_attempt_raise_with_their_index_and_error(stubbed):
    client, stubber = stubbed
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
    stubber.add_response(
        "put_records", {"FailedRecordCount": 1, "Records": [ok("s0", "1"), throttled()]}, request(ENTRIES[:2])
    )
    for _ in range(2):
        stubber.add_response("put_records", {"FailedRecordCount": 1, "Records": [throttled()]}, request([ENTRIES[1]]))

    with pytest.raises(PutRecordsFailed) as raised:
        put_records_resending_failed(client, STREAM, ENTRIES[:2], policy=policy, sleep=lambda _: None)

    error = raised.value
    assert isinstance(error, SinkError)
    assert error.attempts == 3
    assert error.unwritten == 1
    assert error.retryable is True
    assert [(f.index, f.partition_key, f.error_code) for f in error.failed] == [
        (1, "1", "ProvisionedThroughputExceededException")
    ]


def test_backoff_grows_exponentially_is_capped_and_jittered():
    policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=1.0)
    rng = random.Random(7)
    for attempt in range(1, 10):
        ceiling = min(1.0, 0.1 * 2 ** (attempt - 1))
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range
        assert min(delays) < ceiling * 0.2


def test_requests_hold_at_most_500_records_and_5_mib():
    small = [(b"x" * 10, str(i)) for i in range(1_234)]
    assert [len(chunk) for _, chunk in chunk_entries(small)] == [MAX_REQUEST_RECORDS, MAX_REQUEST_RECORDS, 234]

    big = [(b"x" * (1024 * 1024 - 10), f"k{i}") for i in range(12)]  # just under 1 MiB each with its key
    chunks = list(chunk_entries(big))
    assert all(sum(len(d) + len(k) for d, k in chunk) <= MAX_REQUEST_BYTES for _, chunk in chunks)
    assert [offset for offset, _ in chunks] == [0, 5, 10]
    assert sum(len(chunk) for _, chunk in chunks) == 12


def test_entries_kinesis_would_refuse_are_rejected_before_any_request():
    with pytest.raises(ValueError, match="bytes"):
        list(chunk_entries([(b"x" * (1024 * 1024), "key")]))
    with pytest.raises(ValueError, match="partition key"):
        list(chunk_entries([(b"x", "")]))
