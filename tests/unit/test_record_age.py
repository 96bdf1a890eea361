"""MAX_RECORD_AGE_SECONDS: rides older than the maximum age are dead-lettered as stale instead of scored."""

from __future__ import annotations

import pytest

from consumer.errors import SettingsError
from consumer.pipeline.batch import decode_records, expire_stale
from consumer.pipeline.events import Reason
from consumer.pipeline.sink import MemorySink
from consumer.runtime.settings import load_settings
from tests.support.factories import FakeRecord, ride_payload, ride_processor
from tests.support.fakes import FakeCheckpointer, FakeInput

NOW_MILLIS = 1_700_000_100_000


def arrived(seconds_ago: float, ride_id: int) -> FakeRecord:
    return FakeRecord(ride_payload(ride_id), str(100 + ride_id), timestamp_millis=int(NOW_MILLIS - seconds_ago * 1000))


def test_rides_older_than_the_maximum_age_are_rejected_as_stale():
    accepted, _ = decode_records([arrived(5, 1), arrived(61, 2), arrived(59.9, 3)], "shardId-0")
    fresh, stale = expire_stale(accepted, now_millis=NOW_MILLIS, max_age_seconds=60)
    assert [item.ride.ride_id for item in fresh] == [1, 3]
    assert [(item.source.sequence_number, item.reason) for item in stale] == [("102", Reason.STALE)]
    assert "61.0 s ago" in stale[0].detail
    assert stale[0].payload == ride_payload(2)


def test_without_a_maximum_age_nothing_is_stale():
    accepted, _ = decode_records([arrived(86_400 * 7, 1)], "shardId-0")
    assert expire_stale(accepted, now_millis=NOW_MILLIS, max_age_seconds=None) == (accepted, [])


def test_the_processor_dead_letters_stale_rides_and_still_checkpoints_the_batch():
    predictions, dead_letters = MemorySink("predictions"), MemorySink("dead")
    processor = ride_processor(
        predictions=predictions, dead_letters=dead_letters, max_record_age_seconds=30, clock=lambda: NOW_MILLIS / 1000
    )
    checkpointer = FakeCheckpointer()
    processor.process_records(FakeInput([arrived(31, 1), arrived(1, 2)], checkpointer))
    assert len(predictions.written) == 1
    assert [b'"reason":"stale"' in entry.data for entry in dead_letters.written] == [True]
    assert checkpointer.calls == [("102", 0)]


def test_the_maximum_age_setting_is_off_by_default_and_must_be_positive(env):
    assert load_settings().max_record_age_seconds is None
    env.setenv("MAX_RECORD_AGE_SECONDS", "3600")
    assert load_settings().max_record_age_seconds == 3600
    env.setenv("MAX_RECORD_AGE_SECONDS", "0")
    with pytest.raises(SettingsError, match="MAX_RECORD_AGE_SECONDS"):
        load_settings()
