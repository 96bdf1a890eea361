"""The ledger gives every input record one outcome and finds what the event ids alone cannot show."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import orjson

from consumer.pipeline.events import SourceRecord, dead_letter_event, decode_ride, prediction_event
from consumer.tools.ledger import Outcome, build_ledger, format_ledger
from consumer.tools.tail import TailedRecord
from tests.support.factories import ride_payload

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
_output_sequence = iter(range(10**6))


def an_input(shard: str, sequence: int, data: bytes, *, age: timedelta = timedelta(minutes=5)) -> TailedRecord:
    return TailedRecord(shard, str(sequence), "pk", NOW - age, data, None)


def source_of(record: TailedRecord) -> SourceRecord:
    return SourceRecord(record.shard_id, record.sequence_number, 0, record.partition_key, 0)


def output(data: bytes, shard: str = "shardId-000000000000") -> TailedRecord:
    return TailedRecord(shard, str(next(_output_sequence)), "pk", NOW, data, orjson.loads(data))


def predicted(record: TailedRecord, duration: float = 10.0) -> TailedRecord:
    ride = decode_ride(record.data)
    return output(prediction_event(ride, duration, version="1", source=source_of(record)))


def dead_lettered(record: TailedRecord, reason: str = "not_json") -> TailedRecord:
    return output(
        dead_letter_event(
            record.data, reason=reason, detail="x", source=source_of(record), stream_name="rides", version="1"
        )
    )


RIDES = [an_input("shardId-000000000000", 100 + index, ride_payload(index)) for index in range(4)]
POISON = an_input("shardId-000000000000", 200, b"{not json")


def test_each_record_is_predicted_dead_lettered_or_missing():
    ledger = build_ledger([*RIDES, POISON], [predicted(ride) for ride in RIDES[:3]], [dead_lettered(POISON)], now=NOW)
    assert [fate.outcome for fate in ledger.records] == [
        Outcome.PREDICTED,
        Outcome.PREDICTED,
        Outcome.PREDICTED,
        Outcome.MISSING,
        Outcome.DEAD_LETTERED,
    ]
    assert ledger.ids(Outcome.MISSING) == [f"shardId-000000000000:{RIDES[3].sequence_number}:0"]
    assert ledger.counts["in"] == 5
    assert ledger.reasons == {"not_json": 1}
    assert not ledger.complete


def test_copies_with_the_same_id_count_as_duplicates_not_as_more_records():
    outputs = [predicted(ride) for ride in RIDES] + [predicted(RIDES[1]), predicted(RIDES[1])]
    ledger = build_ledger(RIDES, outputs, [], now=NOW)
    assert ledger.counts[Outcome.PREDICTED.value] == 4
    assert ledger.counts["duplicated"] == 1
    assert ledger.counts["extra_copies"] == 2
    assert ledger.counts["differing_copies"] == 0
    assert ledger.complete


def test_copies_that_differ_are_reported():
    ledger = build_ledger(RIDES[:1], [predicted(RIDES[0], 10.0), predicted(RIDES[0], 11.0)], [], now=NOW)
    assert ledger.differing == (ledger.records[0].event_id,)


def test_a_record_both_predicted_and_dead_lettered_is_conflicting():
    ledger = build_ledger(RIDES[:1], [predicted(RIDES[0])], [dead_lettered(RIDES[0], "stale")], now=NOW)
    assert ledger.records[0].outcome is Outcome.CONFLICTING
    assert not ledger.complete


def test_a_recent_record_without_events_is_in_flight_not_missing():
    fresh = an_input("shardId-000000000000", 300, ride_payload(9), age=timedelta(seconds=2))
    ledger = build_ledger([fresh], [], [], settle=timedelta(seconds=30), now=NOW)
    assert ledger.records[0].outcome is Outcome.IN_FLIGHT
    assert build_ledger([fresh], [], [], now=NOW).records[0].outcome is Outcome.MISSING


def test_events_of_no_input_record_and_events_of_another_record_are_caught():
    stranger = an_input("shardId-000000000009", 1, ride_payload(77))
    wrong = predicted(an_input(RIDES[0].shard_id, int(RIDES[0].sequence_number), ride_payload(999)))
    ledger = build_ledger(RIDES[:1], [wrong, predicted(stranger)], [], now=NOW)
    assert ledger.mismatched == (ledger.records[0].event_id,)
    assert ledger.unmatched == ("shardId-000000000009:1:0",)
    assert not ledger.complete


def test_a_dead_letter_must_carry_the_hash_of_its_input():
    event = orjson.loads(dead_lettered(POISON).data)
    assert event["payload_sha256"] == hashlib.sha256(POISON.data).hexdigest()
    event["payload_sha256"] = "0" * 64
    ledger = build_ledger([POISON], [], [output(orjson.dumps(event))], now=NOW)
    assert ledger.mismatched == (ledger.records[0].event_id,)


def test_a_child_shard_written_before_its_parent_finished_is_an_order_violation():
    parent = an_input("shardId-000000000000", 1, ride_payload(1))
    child = an_input("shardId-000000000002", 2, ride_payload(2))
    lineage = {"shardId-000000000002": frozenset({"shardId-000000000000"})}
    in_order = build_ledger([parent, child], [predicted(parent), predicted(child)], [], parents=lineage, now=NOW)
    assert in_order.order_violations == ()
    out_of_order = build_ledger([parent, child], [predicted(child), predicted(parent)], [], parents=lineage, now=NOW)
    assert len(out_of_order.order_violations) == 1


def test_the_report_names_the_missing_records():
    ledger = build_ledger(RIDES, [predicted(ride) for ride in RIDES[:2]], [], now=NOW)
    report = format_ledger(ledger)
    assert "missing:            2" in report
    assert ledger.ids(Outcome.MISSING)[0] in report
    assert "NOT every record" in report


def test_records_in_flight_leave_the_ledger_sound_but_not_complete():
    fresh = an_input("shardId-000000000000", 300, ride_payload(9), age=timedelta(seconds=2))
    ledger = build_ledger([RIDES[0], fresh], [predicted(RIDES[0])], [], settle=timedelta(seconds=30), now=NOW)
    assert ledger.sound
    assert not ledger.complete
    assert "1 in flight" in format_ledger(ledger)
