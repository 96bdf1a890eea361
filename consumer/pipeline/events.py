"""The wire formats: ride events in, prediction and dead-letter events out.

Everything here is pure: bytes in, values out. The processor decides what to do with the outcomes.

- ``validate_ride`` is the one ride validation: it turns a ride's fields (``PULocationID``, ``DOLocationID``,
  ``trip_distance``) into a :class:`Ride` or raises :class:`InvalidRide` with a machine-readable reason. The stream,
  the batch command and the web endpoint (:mod:`consumer.serving`) all call it, so all three accept the same rides.
- ``decode_ride`` turns one Kinesis record's payload into a :class:`Ride` (its envelope, then ``validate_ride``)
  or raises :class:`InvalidRide`.
- ``prediction_event`` keeps the schema of the Lambda this service replaces
  (``{"model", "version", "prediction": {"ride_duration", "ride_id"}}``) and adds ``event_id``.
- ``dead_letter_event`` carries the original payload (base64) and where it came from, so nothing is lost.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.model.features import Ride

__all__ = [
    "DEAD_LETTER_PAYLOAD_LIMIT",
    "MAX_DETAIL_LENGTH",
    "MAX_LOCATION_ID",
    "MAX_RIDE_ID_LENGTH",
    "MAX_TRIP_DISTANCE_MILES",
    "MODEL_NAME_IN_EVENTS",
    "InvalidRide",
    "Reason",
    "SourceRecord",
    "dead_letter_event",
    "decode_ride",
    "event_id",
    "prediction_event",
    "validate_ride",
]

#: The ``model`` field of every prediction event, as the Lambda wrote it. Downstream consumers key on it.
MODEL_NAME_IN_EVENTS = "ride_duration_prediction_model"

#: TLC zone ids run from 1 to 265 (264 and 265 are "unknown"); see taxi_zone_lookup.csv.
MAX_LOCATION_ID = 265

#: A distance above this is a meter fault, not a taxi ride (the January 2022 file has one of 224,481 miles).
MAX_TRIP_DISTANCE_MILES = 1_000.0

#: ride_id becomes the partition key of the prediction event: Kinesis takes at most 256 characters.
MAX_RIDE_ID_LENGTH = 256

#: A dead-letter event's ``detail`` is cut to this many characters (a model's error message can be long).
MAX_DETAIL_LENGTH = 1_000

#: Room left for a dead-letter event's payload: Kinesis takes 1 MiB per record (data + partition key);
#: the envelope around the base64 payload needs a few KiB at most.
DEAD_LETTER_PAYLOAD_LIMIT = 700 * 1024


class Reason:
    """Why a record was dead-lettered. Stable strings: alerts and dashboards group by them."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    MODEL_ERROR = "model_error"
    STALE = "stale"


class InvalidRide(ValueError):
    """A payload that is not a ride we can score. ``reason`` is one of :class:`Reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """Where a payload came from: enough to find it again in the input stream."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    arrival_millis: int


def event_id(source: SourceRecord) -> str:
    """A deterministic id: replaying the same input record yields the same id, so downstream can de-duplicate."""
    return f"{source.shard_id}:{source.sequence_number}:{source.sub_sequence_number}"


def _require_int(ride: Mapping[str, Any], name: str) -> int:
    value = ride.get(name)
    if value is None:
        raise InvalidRide(Reason.MISSING_FIELD, f"ride.{name} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRide(Reason.WRONG_TYPE, f"ride.{name} must be an integer, got {type(value).__name__}")
    if not 1 <= value <= MAX_LOCATION_ID:
        raise InvalidRide(Reason.OUT_OF_RANGE, f"ride.{name}={value} is not a TLC zone id (1..{MAX_LOCATION_ID})")
    return value


def _require_distance(ride: Mapping[str, Any]) -> float:
    value = ride.get("trip_distance")
    if value is None:
        raise InvalidRide(Reason.MISSING_FIELD, "ride.trip_distance is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRide(Reason.WRONG_TYPE, f"ride.trip_distance must be a number, got {type(value).__name__}")
    distance = float(value)
    if not math.isfinite(distance):
        raise InvalidRide(Reason.NOT_FINITE, f"ride.trip_distance={value!r} is not finite")
    if not 0.0 <= distance <= MAX_TRIP_DISTANCE_MILES:
        raise InvalidRide(
            Reason.OUT_OF_RANGE, f"ride.trip_distance={distance} is outside 0..{MAX_TRIP_DISTANCE_MILES:g} miles"
        )
    return distance


def validate_ride(fields: Mapping[str, Any], ride_id: int | str) -> Ride:
    """The ride ``fields`` describe (``{"PULocationID", "DOLocationID", "trip_distance"}``; other keys are
    ignored), as ``ride_id``; raise :class:`InvalidRide` with the reason when it is not a ride the model can score.
    Values arrive as JSON gives them: an integer location id, a number for the distance, None for a null."""
    return Ride(
        ride_id=ride_id,
        pu_location_id=_require_int(fields, "PULocationID"),
        do_location_id=_require_int(fields, "DOLocationID"),
        trip_distance=_require_distance(fields),
    )


def decode_ride(payload: bytes) -> Ride:
    """Decode ``{"ride": {"PULocationID", "DOLocationID", "trip_distance"}, "ride_id"}``; raise InvalidRide."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRide(Reason.NOT_UTF8, f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        # Python's json accepts NaN and Infinity; orjson refuses them, which is what a JSON producer means.
        event = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRide(Reason.NOT_JSON, f"payload is not JSON ({exc.msg})") from None
    if not isinstance(event, dict):
        raise InvalidRide(Reason.NOT_AN_OBJECT, f"payload is a JSON {type(event).__name__}, not an object")
    ride = event.get("ride")
    if ride is None:
        raise InvalidRide(Reason.MISSING_FIELD, "ride is missing")
    if not isinstance(ride, dict):
        raise InvalidRide(Reason.WRONG_TYPE, f"ride must be an object, got {type(ride).__name__}")
    ride_id = event.get("ride_id")
    if ride_id is None:
        raise InvalidRide(Reason.MISSING_FIELD, "ride_id is missing")
    if isinstance(ride_id, bool) or not isinstance(ride_id, int | str) or ride_id == "":
        raise InvalidRide(Reason.WRONG_TYPE, f"ride_id must be an integer or a non-empty string, got {ride_id!r:.40}")
    if len(str(ride_id)) > MAX_RIDE_ID_LENGTH:
        # It becomes the output's partition key, which Kinesis caps at 256 characters.
        raise InvalidRide(Reason.OUT_OF_RANGE, f"ride_id is longer than {MAX_RIDE_ID_LENGTH} characters")
    return validate_ride(ride, ride_id)


def prediction_event(ride: Ride, duration: float, *, version: str, source: SourceRecord) -> bytes:
    """The Lambda's prediction event, plus a deterministic ``event_id``."""
    return orjson.dumps(
        {
            "model": MODEL_NAME_IN_EVENTS,
            "version": version,
            "prediction": {"ride_duration": float(duration), "ride_id": ride.ride_id},
            "event_id": event_id(source),
        }
    )


def dead_letter_event(
    payload: bytes,
    *,
    reason: str,
    detail: str,
    source: SourceRecord,
    stream_name: str,
    version: str,
    limit: int = DEAD_LETTER_PAYLOAD_LIMIT,
) -> bytes:
    """A record we could not score, with its payload. A payload over ``limit`` bytes is cut, never dropped:
    its original size and SHA-256 stay in the event so the record can be found and compared."""
    carried = payload[:limit]
    return orjson.dumps(
        {
            "event_id": event_id(source),
            "reason": reason,
            "detail": detail[:MAX_DETAIL_LENGTH],
            "model_version": version,
            "source": {
                "stream_name": stream_name,
                "shard_id": source.shard_id,
                "sequence_number": source.sequence_number,
                "sub_sequence_number": source.sub_sequence_number,
                "partition_key": source.partition_key,
                "approximate_arrival_timestamp_millis": source.arrival_millis,
            },
            "payload_base64": base64.b64encode(carried).decode("ascii"),
            "payload_size_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "payload_truncated": len(carried) < len(payload),
        }
    )
