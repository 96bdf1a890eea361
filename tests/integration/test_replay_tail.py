"""replay, put_payloads and tail against kinesis-local, with the real January 2022 green taxi trips."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import orjson
import pandas as pd
import pytest

from consumer.pipeline.events import Reason, SourceRecord, dead_letter_event, decode_ride
from consumer.tools.replay import put_payloads, read_rides, replay, rmse
from consumer.tools.streams import list_shards, wait_for_stream_active
from consumer.tools.tail import StreamReader, print_records, read_all


@pytest.fixture(scope="module")
def trips(trips_file: Path) -> pd.DataFrame:
    return pd.read_parquet(trips_file)


def test_replay_of_1000_real_rides_arrives_complete_keyed_by_ride_id(kinesis, make_stream, trips_file, trips):
    stream = make_stream(2)

    summary = replay(trips_file, client=kinesis, stream_name=stream, limit=1000, progress=False)
    records = read_all(kinesis, stream, expect=1000, timeout=30)

    assert summary.records_sent == 1000
    assert len(records) == 1000
    ride_ids = [record.event["ride_id"] for record in records]
    assert sorted(ride_ids) == list(range(1, 1001))
    assert all(record.partition_key == str(record.event["ride_id"]) for record in records)
    arrived_per_shard = {shard: sum(r.shard_id == shard for r in records) for shard in summary.per_shard}
    assert arrived_per_shard == summary.per_shard
    assert len(summary.per_shard) == 2
    assert summary.put_requests == 2
    # ride id n is row n - 1 of the file, sent exactly as the producer did
    first = next(r for r in records if r.event["ride_id"] == 1)
    row = trips.iloc[0]
    assert first.data == orjson.dumps(
        {
            "ride": {
                "PULocationID": int(row.PULocationID),
                "DOLocationID": int(row.DOLocationID),
                "trip_distance": float(row.trip_distance),
            },
            "ride_id": 1,
        }
    )
    assert all(decode_ride(record.data).ride_id == record.event["ride_id"] for record in records)


def test_replay_returns_the_true_duration_of_every_ride_sent(kinesis, make_stream, trips_file, trips):
    summary = replay(
        trips_file, client=kinesis, stream_name=make_stream(1), limit=200, start_ride_id=500, progress=False
    )

    expected = (trips.lpep_dropoff_datetime - trips.lpep_pickup_datetime).dt.total_seconds().head(200) / 60
    assert summary.ground_truth == pytest.approx(dict(zip(range(500, 700), expected, strict=True)))
    assert summary.records_per_second > 0


def test_replay_leaves_out_rejected_rides_and_durations_outside_the_range(kinesis, make_stream, tmp_path):
    base = pd.Timestamp("2022-01-01 10:00")
    rides = pd.DataFrame(
        {
            "lpep_pickup_datetime": [base] * 5,
            "lpep_dropoff_datetime": [base + pd.Timedelta(minutes=m) for m in (10, 0.5, 90, 12, 30)],
            "PULocationID": pd.array([41, 41, 41, None, 74], dtype="Int64"),  # no zone: the consumer dead-letters it
            "DOLocationID": [42, 42, 42, 42, 75],
            "trip_distance": [1.5, 0.1, 20.0, 2.0, 3.0],
        }
    )
    parquet = tmp_path / "rides.parquet"
    rides.to_parquet(parquet)
    stream = make_stream(1)

    summary = replay(
        parquet, client=kinesis, stream_name=stream, skip_invalid=True, duration_range=(1, 60), progress=False
    )

    assert (summary.records_sent, summary.skipped_duration, summary.skipped_invalid) == (2, 2, 1)
    assert summary.ground_truth == {1: 10.0, 5: 30.0}  # ride ids stay the row positions
    assert sorted(r.event["ride_id"] for r in read_all(kinesis, stream, expect=2, timeout=10)) == [1, 5]


def test_replay_paces_to_the_requested_rate(kinesis, make_stream, trips_file):
    stderr = io.StringIO()
    began = time.monotonic()

    summary = replay(
        trips_file, client=kinesis, stream_name=make_stream(1), limit=100, rate_per_second=100, progress_stream=stderr
    )

    elapsed = time.monotonic() - began
    assert summary.records_sent == 100
    assert elapsed >= 0.85  # the last of 10 requests is due at 0.9 s
    assert summary.put_requests == 10
    assert "replay: 100/100 records" in stderr.getvalue()


def test_read_rides_numbers_rides_from_start_ride_id_at_skip_rows(trips_file, trips):
    rides = read_rides(trips_file, start_ride_id=100, skip_rows=10)
    first, second = next(rides), next(rides)

    assert (first.ride_id, second.ride_id) == (100, 101)
    assert first.pu_location_id == trips.PULocationID.iloc[10]
    assert first.trip_distance == trips.trip_distance.iloc[10]


def test_put_payloads_carries_arbitrary_bytes_unchanged(kinesis, make_stream):
    stream = make_stream(2)
    payloads = [
        (b"\xff\xfe\x00\x01 not utf-8", "poison-1"),
        (b"not json at all", "poison-2"),
        (b'{"ride": null, "ride_id": 7}', "poison-3"),
        (b"[1, 2, 3]", "poison-4"),
        (bytes(range(256)) * 4000, "poison-5"),  # ~1 MiB of every byte value
    ]

    results = put_payloads(kinesis, stream, payloads)
    records = read_all(kinesis, stream, expect=len(payloads), timeout=15)

    assert len(results) == len(payloads)
    assert sorted((r.data, r.partition_key) for r in records) == sorted(payloads)
    by_key = {r.partition_key: r for r in records}
    assert by_key["poison-1"].event is None
    assert by_key["poison-1"].error is not None
    assert by_key["poison-4"].event == [1, 2, 3]
    assert {(r.shard_id, r.sequence_number) for r in records} == {(r.shard_id, r.sequence_number) for r in results}


def test_tail_follows_child_shards_after_resharding_parents_first(kinesis, make_stream):
    stream = make_stream(1)
    put_payloads(kinesis, stream, [(orjson.dumps({"n": i}), f"key-{i % 7}") for i in range(50)])
    kinesis.update_shard_count(StreamName=stream, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
    wait_for_stream_active(kinesis, stream)
    put_payloads(kinesis, stream, [(orjson.dumps({"n": i}), f"key-{i % 7}") for i in range(50, 100)])

    records = read_all(kinesis, stream, expect=100, timeout=20)

    assert len(list_shards(kinesis, stream)) == 3
    assert sorted(r.event["n"] for r in records) == list(range(100))
    parent = records[0].shard_id
    assert [r.shard_id == parent for r in records] == [True] * 50 + [False] * 50
    for key in {r.partition_key for r in records}:  # per key, in the order written
        numbers = [r.event["n"] for r in records if r.partition_key == key]
        assert numbers == sorted(numbers)


def test_read_all_waits_out_its_timeout_for_what_never_comes_then_returns_what_arrived(kinesis, make_stream):
    stream = make_stream(1)
    put_payloads(kinesis, stream, [(b"{}", "a"), (b"{}", "b")])
    began = time.monotonic()

    records = read_all(kinesis, stream, expect=10, timeout=1.0)

    assert len(records) == 2
    assert time.monotonic() - began >= 1.0


def test_read_all_without_expect_stops_at_the_end_of_every_shard_not_at_its_timeout(kinesis, make_stream):
    stream = make_stream(3)
    put_payloads(kinesis, stream, [(b"{}", str(i)) for i in range(30)])
    polls: list[int] = []
    reader_poll = StreamReader.poll

    def counted_poll(self):
        polls.append(1)
        assert len(polls) <= 1000, "read_all went on polling after every shard was read to its end"
        return reader_poll(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StreamReader, "poll", counted_poll)
        records = read_all(kinesis, stream, timeout=3600)

    assert len(records) == 30


def test_print_records_writes_json_lines_and_decodes_dead_letter_payloads(kinesis, make_stream):
    stream = make_stream(1)
    source = SourceRecord("shardId-000000000000", "4967", 0, "poison", 1_700_000_000_000)
    dead_letter = dead_letter_event(
        b'{"ride": {"PULocationID": 0}}',
        reason=Reason.MISSING_FIELD,
        detail="ride_id is missing",
        source=source,
        stream_name="rides",
        version="3",
    )
    put_payloads(kinesis, stream, [(dead_letter, "dl"), (b"\xff binary", "raw")])
    out = io.StringIO()

    printed = print_records(kinesis, stream, out=out, decode_payloads=True)

    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert printed == len(lines) == 2
    assert lines[0]["partition_key"] == "dl"
    assert lines[0]["event"]["reason"] == "missing_field"
    assert lines[0]["event"]["payload"] == {"ride": {"PULocationID": 0}}
    assert lines[0]["event"]["payload_kind"] == "json"
    assert lines[1]["event"]["error"].startswith("not JSON")
    assert "data_base64" in lines[1]["event"]

    bare = io.StringIO()
    print_records(kinesis, stream, out=bare, envelope=False, max_records=1)
    assert orjson.loads(bare.getvalue())["reason"] == "missing_field"


def test_stream_reader_polls_new_records_as_they_arrive(kinesis, make_stream):
    stream = make_stream(2)
    reader = StreamReader(kinesis, stream)
    assert reader.poll() == []

    put_payloads(kinesis, stream, [(b'{"a": 1}', "x")])

    assert [r.event for r in reader.poll()] == [{"a": 1}]
    assert reader.poll() == []


def test_rmse_matches_predictions_to_ride_ids_given_as_int_or_string():
    error, scored = rmse({1: 10.0, 2: 20.0, 3: 30.0}, {"1": 12.0, 2: 20.0, 99: 5.0})

    assert scored == 2
    assert error == pytest.approx(math.sqrt((4 + 0) / 2))
    assert math.isnan(rmse({1: 1.0}, {})[0])
