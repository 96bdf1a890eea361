"""The fault-injection proxy against kinesis-local, driven by the processors' own sink (KinesisSink): partial
failures are resent entry by entry, failed calls are retried, a lost response duplicates (at-least-once), and a
spent budget raises SinkError."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from consumer.errors import SinkError
from consumer.pipeline.sink import Entry, KinesisSink
from consumer.runtime.aws import put_records_client
from consumer.tools.streams import DUMMY_CREDENTIALS
from consumer.tools.tail import read_all
from tests.faults.kinesis_proxy import FailCalls, KinesisProxy, ThrottleEntries


@pytest.fixture
def proxy(local_stack):
    with KinesisProxy(local_stack.kinesis_endpoint) as running:
        yield running


def sink_through(proxy: KinesisProxy, stream: str, **options) -> KinesisSink:
    """The processors' sink, its client as theirs (PutRecords that never retries on its own), talking to the proxy."""
    client = put_records_client(region="us-east-1", endpoint_url=proxy.endpoint, credentials=DUMMY_CREDENTIALS)
    return KinesisSink(client, stream, backoff_first_seconds=0.01, backoff_max_seconds=0.05, **options)


ENTRIES = [Entry(f"event-{index}".encode(), f"key-{index}") for index in range(1200)]


def written(local_stack, stream: str, expect: int) -> list[bytes]:
    return sorted(record.data for record in read_all(local_stack.kinesis_client(), stream, expect=expect, timeout=20))


def test_throttled_entries_are_resent_until_each_is_written_exactly_once(local_stack, make_stream, proxy):
    stream = make_stream(2)
    proxy.add(ThrottleEntries(stream, fraction=0.3, seed=7))
    with capture_logs() as logs:
        sink_through(proxy, stream, max_attempts=30).put(ENTRIES)
    assert written(local_stack, stream, len(ENTRIES)) == sorted(entry.data for entry in ENTRIES)
    assert proxy.stats[(stream, "entries_failed")] > 0.2 * len(ENTRIES)
    retries = [log for log in logs if log["event"] == "put_records_retry"]
    assert retries and all("ProvisionedThroughputExceededException" in log["cause"] for log in retries)


def test_failed_calls_are_retried_and_write_nothing_twice(local_stack, make_stream, proxy):
    stream = make_stream(1)
    proxy.add(FailCalls(stream, error_code="InternalFailure", calls=2))
    proxy.add(FailCalls(stream, error_code="ProvisionedThroughputExceededException", calls=1))
    sink_through(proxy, stream).put(ENTRIES[:300])
    assert written(local_stack, stream, 300) == sorted(entry.data for entry in ENTRIES[:300])
    assert proxy.stats[(stream, "calls_failed")] == 3


def test_a_call_written_but_answered_with_an_error_is_written_again(local_stack, make_stream, proxy):
    stream = make_stream(1)
    proxy.add(FailCalls(stream, error_code="InternalFailure", calls=1, after_write=True))
    sink_through(proxy, stream).put(ENTRIES[:100])
    assert written(local_stack, stream, 200) == sorted(entry.data for entry in ENTRIES[:100] * 2)


def test_a_spent_retry_budget_raises_sink_error_naming_the_stream(make_stream, proxy):
    stream = make_stream(1)
    proxy.add(ThrottleEntries(stream, fraction=1.0))
    with pytest.raises(SinkError, match=stream) as raised:
        sink_through(proxy, stream, max_attempts=3).put(ENTRIES[:10])
    assert raised.value.unwritten == 10
    assert raised.value.retryable
    assert proxy.stats[(stream, "calls")] == 3
