"""The wire formats: ride events in, prediction and dead-letter events out.

Everything here is pure: bytes in, values out. The processor decides what to do with the outcomes.

- ``validate_ride`` is the one ride validation: it turns a ride's fields (``PULocationID``, ``DOLocationID``,
  ``trip_distance``) into a :class:`Ride` or raises :class:`InvalidRide` with a machine-readable reason. The stream,
  the batch command and the web endpoint (:mod:`consumer.serving`) all call it, so all three accept the same rides.
- ``ride_from_event`` validates a parsed ride event (its envelope and ride id, then ``validate_ride``);
  ``decode_ride`` does the same from one Kinesis record's payload.
- ``unusual`` names what is odd about a valid ride (a meter fault, a zone id the TLC does not have): such a ride is
  scored all the same, and counted.
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
    "Unusual",
    "dead_letter_event",
    "decode_ride",
    "event_id",
    "prediction_event",
    "ride_from_event",
    "unusual",
    "validate_ride",
]

#: The ``model`` field of every prediction event, as the Lambda wrote it. Downstream consumers key on it.
MODEL_NAME_IN_EVENTS = "ride_duration_prediction_model"

#: TLC zone ids run from 1 to 265 (264 and 265 are "unknown"); see taxi_zone_lookup.csv. Another id is scored
#: (the model has never seen it, as it has never seen some zone pairs) and counted as :attr:`Unusual.UNKNOWN_ZONE`.
MAX_LOCATION_ID = 265

#: A distance above this is most likely a meter fault (the January 2022 file has one of 224,481 miles, and about 1
#: ride in 1,000 over this bound). The model was trained on such rows and the Lambda scored them: so does this
#: service, counting them as :attr:`Unusual.LONG_DISTANCE`.
MAX_TRIP_DISTANCE_MILES = 1_000.0

#: ride_id becomes the partition key of the prediction event: Kinesis takes at most 256 characters.
MAX_RIDE_ID_LENGTH = 256

#: A dead-letter event's ``detail`` is cut to this many characters (a model's error message can be long).
MAX_DETAIL_LENGTH = 1_000

#: Room left for a dead-letter event's payload: Kinesis takes 1 MiB per record (data + partition key);
#: the envelope around the base64 payload needs a few KiB at most.
DEAD_LETTER_PAYLOAD_LIMIT = 700 * 1024


class Reason:
    """Why a record was dead-lettered: it cannot become model input, the model cannot score it, or its prediction
    cannot be written. Stable strings: alerts and dashboards group by them."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    RIDE_ID_TOO_LONG = "ride_id_too_long"
    MODEL_ERROR = "model_error"
    STALE = "stale"


class Unusual:
    """What may be odd about a ride that is scored all the same. Stable strings: the ``kind`` label of
    ``ride_consumer_unusual_rides_total``."""

    LONG_DISTANCE = "long_distance"  # over MAX_TRIP_DISTANCE_MILES
    NEGATIVE_DISTANCE = "negative_distance"
    UNKNOWN_ZONE = "unknown_zone"  # a pick-up or drop-off id outside 1..MAX_LOCATION_ID


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
    return value


def _require_distance(ride: Mapping[str, Any]) -> float:
    value = ride.get("trip_distance")
    if value is None:
        raise InvalidRide(Reason.MISSING_FIELD, "ride.trip_distance is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRide(Reason.WRONG_TYPE, f"ride.trip_distance must be a number, got {type(value).__name__}")
    try:
        distance = float(value)
    except OverflowError:  # an integer too large for a float: no model input either
        distance = math.inf
    if not math.isfinite(distance):
        raise InvalidRide(Reason.NOT_FINITE, f"ride.trip_distance={value!r:.40} is not finite")
    return distance


def validate_ride(fields: Mapping[str, Any], ride_id: int | str) -> Ride:
    """The ride ``fields`` describe (``{"PULocationID", "DOLocationID", "trip_distance"}``; other keys are
    ignored), as ``ride_id``; raise :class:`InvalidRide` with the reason when it cannot become model input. The zone
    ids must be integers and the distance a finite number, whatever their values: an unusual one is scored and
    counted (:func:`unusual`). Values arrive as JSON gives them: an integer location id, a number for the distance,
    None for a null."""
    return Ride(
        ride_id=ride_id,
        pu_location_id=_require_int(fields, "PULocationID"),
        do_location_id=_require_int(fields, "DOLocationID"),
        trip_distance=_require_distance(fields),
    )


def ride_from_event(event: object) -> Ride:
    """Validate a parsed ride event ``{"ride": {"PULocationID", "DOLocationID", "trip_distance"}, "ride_id"}``.

    A ride is valid when it can become model input (:func:`validate_ride`) and its prediction can be written: the
    ride id an integer or a non-empty string of at most :data:`MAX_RIDE_ID_LENGTH` characters. Raise
    :class:`InvalidRide` otherwise.
    """
    if not isinstance(event, Mapping):
        raise InvalidRide(Reason.NOT_AN_OBJECT, f"payload is a JSON {type(event).__name__}, not an object")
    ride = event.get("ride")
    if ride is None:
        raise InvalidRide(Reason.MISSING_FIELD, "ride is missing")
    if not isinstance(ride, Mapping):
        raise InvalidRide(Reason.WRONG_TYPE, f"ride must be an object, got {type(ride).__name__}")
    ride_id = event.get("ride_id")
    if ride_id is None:
        raise InvalidRide(Reason.MISSING_FIELD, "ride_id is missing")
    if isinstance(ride_id, bool) or not isinstance(ride_id, int | str) or ride_id == "":
        raise InvalidRide(Reason.WRONG_TYPE, f"ride_id must be an integer or a non-empty string, got {ride_id!r:.40}")
    if len(str(ride_id)) > MAX_RIDE_ID_LENGTH:
        # It becomes the prediction's partition key, which Kinesis caps at 256 characters: it cannot be written.
        raise InvalidRide(
            Reason.RIDE_ID_TOO_LONG,
            f"ride_id has {len(str(ride_id))} characters; a Kinesis partition key takes at most {MAX_RIDE_ID_LENGTH}",
        )
    return validate_ride(ride, ride_id)


def decode_ride(payload: bytes) -> Ride:
    """Decode one record's payload (UTF-8 JSON) and validate it with :func:`ride_from_event`; raise InvalidRide."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRide(Reason.NOT_UTF8, f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        # Python's json accepts NaN and Infinity; orjson refuses them, which is what a JSON producer means.
        event = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRide(Reason.NOT_JSON, f"payload is not JSON ({exc.msg})") from None
    return ride_from_event(event)


def unusual(ride: Ride) -> tuple[str, ...]:
    """The :class:`Unusual` kinds of a valid ride, each at most once; empty for an ordinary ride."""
    kinds: list[str] = []
    if ride.trip_distance > MAX_TRIP_DISTANCE_MILES:
        kinds.append(Unusual.LONG_DISTANCE)
    elif ride.trip_distance < 0:
        kinds.append(Unusual.NEGATIVE_DISTANCE)
    if not (1 <= ride.pu_location_id <= MAX_LOCATION_ID and 1 <= ride.do_location_id <= MAX_LOCATION_ID):
        kinds.append(Unusual.UNKNOWN_ZONE)
    return tuple(kinds)


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
