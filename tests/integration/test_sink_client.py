"""The sinks' Kinesis client against kinesis-mock: botocore's own check of each request is off (the sink builds its
requests and checks what Kinesis would refuse), writes still land, and a request Kinesis refuses still fails loudly,
refused by the service instead of by botocore."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from consumer.pipeline.sink import RETRYABLE_ERROR_CODES, Entry, KinesisSink
from consumer.runtime.settings import load_settings
from consumer.runtime.shard import sink_client
from consumer.tools.tail import read_all

_REFUSED = {"Data": b"{}", "PartitionKey": ""}  # Kinesis wants a partition key of 1 to 256 characters


@pytest.fixture
def client(local_stack, monkeypatch):
    from tests.unit.conftest import REQUIRED

    for name, value in {**REQUIRED, **local_stack.env()}.items():
        monkeypatch.setenv(name, value)
    return sink_client(load_settings())


def test_the_sink_client_writes_every_entry_to_a_real_stream(client, make_stream, kinesis):
    stream = make_stream()
    entries = [Entry(f'{{"ride_id": {i}}}'.encode(), str(i)) for i in range(3)]

    written = KinesisSink(client, stream).put(entries)

    assert len(written) == 3
    assert sorted(record.data for record in read_all(kinesis, stream, expect=3)) == sorted(e.data for e in entries)


def test_a_request_kinesis_refuses_is_refused_by_the_service_not_by_botocore(client, kinesis, make_stream):
    stream = make_stream()
    with pytest.raises(ParamValidationError):  # the tools' client still checks before sending
        kinesis.put_records(StreamName=stream, Records=[_REFUSED])

    with pytest.raises(ClientError) as refused:  # the sinks' client sends it, and Kinesis refuses it
        client.put_records(StreamName=stream, Records=[_REFUSED])

    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] not in RETRYABLE_ERROR_CODES  # the sink gives up at once, naming it
