"""The sinks' PutRecords client (consumer/runtime/putrecords.py) against kinesis-mock, made as the record processor
makes it: writes land where it says, and what Kinesis refuses, or an endpoint that does not answer, fails as the sink
expects (botocore's exceptions, the service's codes)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from consumer.errors import SinkError
from consumer.pipeline.sink import RETRYABLE_ERROR_CODES, RETRYABLE_TRANSPORT_ERRORS, Entry, KinesisSink
from consumer.runtime.aws import put_records_client
from consumer.runtime.settings import load_settings
from consumer.runtime.shard import sink_client
from consumer.tools.localstack import free_port
from consumer.tools.streams import DUMMY_CREDENTIALS
from consumer.tools.tail import read_all


@pytest.fixture
def client(local_stack, monkeypatch):
    from tests.unit.conftest import REQUIRED

    for name, value in {**REQUIRED, **local_stack.env()}.items():
        monkeypatch.setenv(name, value)
    return sink_client(load_settings())


def test_every_entry_lands_where_the_answer_says(client, make_stream, kinesis):
    stream = make_stream(2)
    entries = [Entry(f'{{"ride_id": {i}}}'.encode(), str(i)) for i in range(1200)]

    written = KinesisSink(client, stream).put(entries)

    landed = read_all(kinesis, stream, expect=len(entries))
    assert sorted(record.data for record in landed) == sorted(entry.data for entry in entries)
    where = {(record.shard_id, record.sequence_number): record.data for record in landed}
    assert [where[(result.shard_id, result.sequence_number)] for result in written] == [e.data for e in entries]


def test_a_request_kinesis_refuses_is_refused_by_the_service_with_its_code(client, make_stream):
    stream = make_stream()
    with pytest.raises(ClientError) as refused:  # Kinesis wants a partition key of 1 to 256 characters
        client.put_records(StreamName=stream, Records=[{"Data": b"{}", "PartitionKey": ""}])

    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] and error["Error"]["Code"] not in RETRYABLE_ERROR_CODES


def test_a_missing_stream_stops_the_sink_at_once_naming_it(client, local_stack):
    with pytest.raises(SinkError, match="ResourceNotFoundException") as raised:
        KinesisSink(client, "no-such-stream", sleep=lambda _: pytest.fail("must not retry")).put([Entry(b"{}", "1")])
    assert not raised.value.retryable


def test_an_endpoint_that_does_not_answer_is_a_transport_error_the_sink_retries():
    client = put_records_client(
        region="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}", credentials=DUMMY_CREDENTIALS
    )
    with pytest.raises(EndpointConnectionError) as raised:
        client.put_records(StreamName="out", Records=[{"Data": b"{}", "PartitionKey": "1"}])
    assert isinstance(raised.value, RETRYABLE_TRANSPORT_ERRORS)
