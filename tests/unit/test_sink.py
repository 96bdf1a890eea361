import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber

from consumer.errors import SinkError
from consumer.pipeline.sink import MAX_RECORDS_PER_PUT, Entry, KinesisSink, MemorySink, chunked


def entries(count: int, size: int = 10) -> list[Entry]:
    return [Entry(b"x" * size, str(index)) for index in range(count)]


def client():
    return boto3.client("kinesis", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")


def ok(count: int) -> dict:
    return {"Records": [{"SequenceNumber": "1", "ShardId": "s"} for _ in range(count)]}


def expected(batch: list[Entry]) -> dict:
    return {"StreamName": "out", "Records": [{"Data": e.data, "PartitionKey": e.partition_key} for e in batch]}


def test_chunks_respect_the_record_count_and_byte_limits():
    assert [len(chunk) for chunk in chunked(entries(1201))] == [500, 500, 201]
    big = entries(12, size=1000 * 1000)
    sizes = [sum(entry.size for entry in chunk) for chunk in chunked(big)]
    assert all(size <= 5 * 1024 * 1024 for size in sizes)
    assert sum(len(chunk) for chunk in chunked(big)) == 12


def test_a_record_kinesis_would_refuse_is_refused_before_the_call():
    with pytest.raises(ValueError, match="1 MiB"):
        list(chunked([Entry(b"x" * (1024 * 1024), "k")]))
    with pytest.raises(ValueError, match="partition key"):
        list(chunked([Entry(b"x", "")]))


def test_only_the_failed_entries_are_sent_again():
    kinesis = client()
    batch = entries(4)
    sleeps: list[float] = []
    with Stubber(kinesis) as stub:
        stub.add_response(
            "put_records",
            {
                "FailedRecordCount": 2,
                "Records": [
                    {"SequenceNumber": "1", "ShardId": "s"},
                    {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"},
                    {"SequenceNumber": "3", "ShardId": "s"},
                    {"ErrorCode": "InternalFailure", "ErrorMessage": "oops"},
                ],
            },
            expected(batch),
        )
        stub.add_response(
            "put_records",
            {"Records": [{"SequenceNumber": "2", "ShardId": "s"}, {"SequenceNumber": "4", "ShardId": "s"}]},
            expected([batch[1], batch[3]]),
        )
        written = KinesisSink(kinesis, "out", sleep=sleeps.append).put(batch)
        stub.assert_no_pending_responses()
    assert len(sleeps) == 1
    assert [result.sequence_number for result in written] == ["1", "2", "3", "4"]  # in the order given


def test_a_throttled_call_is_retried_with_capped_backoff():
    kinesis = client()
    batch = entries(2)
    sleeps: list[float] = []
    with Stubber(kinesis) as stub:
        for _ in range(5):
            stub.add_client_error("put_records", "ProvisionedThroughputExceededException", "throttled")
        stub.add_response("put_records", ok(2), expected(batch))
        KinesisSink(kinesis, "out", sleep=sleeps.append, backoff_max_seconds=0.5).put(batch)
    assert len(sleeps) == 5
    assert all(0 <= delay <= 0.5 for delay in sleeps)


def test_a_spent_retry_budget_raises_with_the_unwritten_count():
    kinesis = client()
    with Stubber(kinesis) as stub:
        for _ in range(3):
            stub.add_client_error("put_records", "InternalFailure", "down")
        with pytest.raises(SinkError) as caught:
            KinesisSink(kinesis, "out", max_attempts=3, sleep=lambda _: None).put(entries(7))
    assert caught.value.unwritten == 7
    assert caught.value.stream_name == "out"
    assert caught.value.retryable
    assert "3 attempts" in str(caught.value)


def test_a_missing_stream_fails_at_once_naming_it():
    kinesis = client()
    with Stubber(kinesis) as stub:
        stub.add_client_error("put_records", "ResourceNotFoundException", "Stream out under account 1 not found.")
        with pytest.raises(SinkError, match="out: PutRecords refused with ResourceNotFoundException") as caught:
            KinesisSink(kinesis, "out", sleep=lambda _: pytest.fail("must not retry")).put(entries(1))
    assert not caught.value.retryable


def test_an_unreachable_endpoint_is_retried_then_reported():
    class Unreachable:
        calls = 0

        def put_records(self, **_):
            self.calls += 1
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    fake = Unreachable()
    with pytest.raises(SinkError, match="EndpointConnectionError"):
        KinesisSink(fake, "out", max_attempts=4, sleep=lambda _: None).put(entries(1))
    assert fake.calls == 4


def test_the_memory_sink_records_and_fails_like_the_real_one():
    sink = MemorySink("out")
    sink.put(entries(MAX_RECORDS_PER_PUT + 1))
    assert len(sink.written) == MAX_RECORDS_PER_PUT + 1
    sink.fail_with = SinkError("down", stream_name="out", unwritten=1, retryable=True)
    with pytest.raises(SinkError):
        sink.put(entries(1))


def test_results_come_back_in_the_order_given_after_several_rounds_of_partial_failure():
    kinesis = client()
    batch = entries(5)
    throttled = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}
    internal = {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."}

    def done(shard: str, sequence: str) -> dict:
        return {"ShardId": shard, "SequenceNumber": sequence}

    retried: list[int] = []
    with Stubber(kinesis) as stub:
        stub.add_response(
            "put_records",
            {
                "FailedRecordCount": 2,
                "Records": [done("s0", "1"), throttled, done("s1", "2"), internal, done("s0", "3")],
            },
            expected(batch),
        )
        stub.add_response(
            "put_records",
            {"FailedRecordCount": 1, "Records": [done("s1", "4"), throttled]},
            expected([batch[1], batch[3]]),
        )
        stub.add_response("put_records", {"Records": [done("s1", "5")]}, expected([batch[3]]))
        written = KinesisSink(kinesis, "out", sleep=lambda _: None, on_retry=retried.append).put(batch)
    assert [(r.shard_id, r.sequence_number) for r in written] == [
        ("s0", "1"),
        ("s1", "4"),
        ("s1", "2"),
        ("s1", "5"),
        ("s0", "3"),
    ]
    assert retried == [2, 1]  # how many entries each retry sent again
