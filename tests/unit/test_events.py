import base64
import hashlib

import orjson
import pytest

from consumer.model.features import Ride
from consumer.pipeline.events import (
    MAX_RIDE_ID_LENGTH,
    MODEL_NAME_IN_EVENTS,
    InvalidRide,
    Reason,
    SourceRecord,
    Unusual,
    dead_letter_event,
    decode_ride,
    event_id,
    prediction_event,
    ride_from_event,
    unusual,
    validate_ride,
)
from tests.support.factories import ride_payload

SOURCE = SourceRecord("shardId-000000000001", "4960000000000000000000001", 3, "156", 1_700_000_000_000)


def test_a_seed_ride_decodes_to_its_fields():
    assert decode_ride(ride_payload()) == Ride(ride_id=156, pu_location_id=130, do_location_id=205, trip_distance=3.66)


def test_string_ride_ids_and_integer_distances_are_accepted():
    ride = decode_ride(ride_payload(ride_id="abc-1", distance=4))
    assert ride.ride_id == "abc-1"
    assert ride.trip_distance == 4.0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not utf-8", Reason.NOT_UTF8),
        (b"{not json", Reason.NOT_JSON),
        (b'{"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": NaN}, "ride_id": 1}', Reason.NOT_JSON),
        (b"[1, 2, 3]", Reason.NOT_AN_OBJECT),
        (b'{"ride_id": 1}', Reason.MISSING_FIELD),
        (b'{"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1.0}}', Reason.MISSING_FIELD),
        (b'{"ride": "130_205", "ride_id": 1}', Reason.WRONG_TYPE),
        (ride_payload(pu="130"), Reason.WRONG_TYPE),
        (ride_payload(pu=True), Reason.WRONG_TYPE),
        (ride_payload(do=13.5), Reason.WRONG_TYPE),
        (ride_payload(distance="3.66"), Reason.WRONG_TYPE),
        (ride_payload(ride_id=True), Reason.WRONG_TYPE),
        (ride_payload(ride_id=[1]), Reason.WRONG_TYPE),
        (ride_payload(ride_id=""), Reason.WRONG_TYPE),
        (ride_payload(ride_id="x" * (MAX_RIDE_ID_LENGTH + 1)), Reason.RIDE_ID_TOO_LONG),
        (
            # orjson reads an integer past 64 bits as a float: not a ride id
            b'{"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1}, "ride_id": 1%s}' % (b"0" * 300),
            Reason.WRONG_TYPE,
        ),
        (ride_payload(pu=None), Reason.MISSING_FIELD),
        (b'{"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1e999}, "ride_id": 1}', Reason.NOT_JSON),
    ],
)
def test_a_bad_payload_is_rejected_with_its_reason(payload, reason):
    with pytest.raises(InvalidRide) as caught:
        decode_ride(payload)
    assert caught.value.reason == reason
    assert caught.value.detail


def test_validate_ride_takes_a_rides_fields_and_ignores_the_others():
    """What the batch command and the web endpoint call: the fields alone, the ride id given."""
    fields = {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3, "VendorID": 2, "ride_id": "ignored"}

    assert validate_ride(fields, "2022/01_7") == Ride("2022/01_7", 130, 205, 3.0)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"DOLocationID": 205, "trip_distance": 3.66}, Reason.MISSING_FIELD),
        ({"PULocationID": None, "DOLocationID": 205, "trip_distance": 3.66}, Reason.MISSING_FIELD),
        ({"PULocationID": 130.0, "DOLocationID": 205, "trip_distance": 3.66}, Reason.WRONG_TYPE),
        ({"PULocationID": 130, "DOLocationID": 205, "trip_distance": float("nan")}, Reason.NOT_FINITE),
        ({"PULocationID": 130, "DOLocationID": 205, "trip_distance": float("-inf")}, Reason.NOT_FINITE),
    ],
)
def test_validate_ride_refuses_fields_with_the_streams_reasons(fields, reason):
    with pytest.raises(InvalidRide) as caught:
        validate_ride(fields, 1)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("distance", "pu", "do", "kinds"),
    [
        (224_481.38, 130, 205, (Unusual.LONG_DISTANCE,)),  # the January 2022 file's longest meter reading
        (1_000.01, 130, 205, (Unusual.LONG_DISTANCE,)),
        (-1.0, 130, 205, (Unusual.NEGATIVE_DISTANCE,)),
        (3.66, 0, 205, (Unusual.UNKNOWN_ZONE,)),
        (3.66, 130, 266, (Unusual.UNKNOWN_ZONE,)),
        (-2, 999, -1, (Unusual.NEGATIVE_DISTANCE, Unusual.UNKNOWN_ZONE)),
        (1e300, 130, 205, (Unusual.LONG_DISTANCE,)),
    ],
)
def test_a_ride_with_unusual_values_is_accepted_and_says_what_is_unusual(distance, pu, do, kinds):
    ride = decode_ride(ride_payload(pu=pu, do=do, distance=distance))

    assert ride == Ride(ride_id=156, pu_location_id=pu, do_location_id=do, trip_distance=float(distance))
    assert unusual(ride) == kinds


@pytest.mark.parametrize(
    "ride",
    [Ride(1, 1, 265, 0.0), Ride(2, 264, 264, 1_000.0), Ride(3, 130, 205, 3.66)],
    ids=["zone bounds, zero miles", "unknown-zone ids of the TLC, 1,000 miles", "the seed's ride"],
)
def test_an_ordinary_ride_is_not_unusual(ride):
    assert unusual(ride) == ()


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            {"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": float("nan")}, "ride_id": 1},
            Reason.NOT_FINITE,
        ),
        (
            {"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": float("-inf")}, "ride_id": 1},
            Reason.NOT_FINITE,
        ),
        ({"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 10**400}, "ride_id": 1}, Reason.NOT_FINITE),
        (
            {"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1.0}, "ride_id": 10**300},
            Reason.RIDE_ID_TOO_LONG,
        ),
        ([1, 2], Reason.NOT_AN_OBJECT),
        ("a ride", Reason.NOT_AN_OBJECT),
    ],
    ids=["nan", "-inf", "an int past float's range", "a 301-digit ride id", "a list", "a string"],
)
def test_an_event_parsed_elsewhere_is_held_to_the_same_rules(event, reason):
    """What another JSON parser may produce (Python's json reads NaN, Infinity and integers of any size)."""
    with pytest.raises(InvalidRide) as caught:
        ride_from_event(event)
    assert caught.value.reason == reason


def test_a_decoded_payload_and_its_parsed_event_give_the_same_ride():
    payload = ride_payload(ride_id="r-1", pu=7, do=300, distance=-0.5)
    assert decode_ride(payload) == ride_from_event(orjson.loads(payload))


def test_a_missing_ride_field_is_named_in_the_detail():
    with pytest.raises(InvalidRide, match=r"ride\.DOLocationID is missing"):
        decode_ride(b'{"ride": {"PULocationID": 1, "trip_distance": 1.0}, "ride_id": 1}')


def test_the_prediction_event_keeps_the_lambda_schema_and_adds_a_deterministic_id():
    event = orjson.loads(prediction_event(decode_ride(ride_payload()), 17.5, version="7", source=SOURCE))
    assert event == {
        "model": MODEL_NAME_IN_EVENTS,
        "version": "7",
        "prediction": {"ride_duration": 17.5, "ride_id": 156},
        "event_id": "shardId-000000000001:4960000000000000000000001:3",
    }
    assert event_id(SOURCE) == event["event_id"]


def test_a_dead_letter_event_carries_the_payload_and_where_it_came_from():
    payload = b"\xff garbage"
    event = orjson.loads(
        dead_letter_event(
            payload, reason=Reason.NOT_UTF8, detail="bad", source=SOURCE, stream_name="rides", version="7"
        )
    )
    assert base64.b64decode(event["payload_base64"]) == payload
    assert event["reason"] == "not_utf8"
    assert event["source"]["shard_id"] == SOURCE.shard_id
    assert event["source"]["sequence_number"] == SOURCE.sequence_number
    assert event["source"]["sub_sequence_number"] == 3
    assert event["source"]["partition_key"] == "156"
    assert event["source"]["stream_name"] == "rides"
    assert event["payload_truncated"] is False
    assert event["event_id"] == event_id(SOURCE)


def test_an_oversized_dead_letter_payload_is_truncated_with_its_size_and_hash_kept():
    payload = b"x" * (1024 * 1024 - 10)
    encoded = dead_letter_event(payload, reason="not_json", detail="d", source=SOURCE, stream_name="rides", version="7")
    event = orjson.loads(encoded)
    assert len(encoded) < 1024 * 1024 - 256
    assert event["payload_truncated"] is True
    assert event["payload_size_bytes"] == len(payload)
    assert event["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert payload.startswith(base64.b64decode(event["payload_base64"]))


def test_a_dead_letter_detail_is_cut_to_1000_characters():
    event = orjson.loads(
        dead_letter_event(b"{}", reason="model_error", detail="e" * 50_000, source=SOURCE, stream_name="s", version="1")
    )
    assert len(event["detail"]) == 1_000
