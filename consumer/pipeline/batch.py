"""The pure steps of one batch: decode -> validate -> score -> encode. No I/O but the model call.

Every record of a batch leaves these steps with exactly one outcome: a prediction entry for the output stream
or a dead-letter entry carrying its payload and the reason. The processor then puts them and checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from consumer.model.features import Ride
from consumer.pipeline.events import (
    InvalidRide,
    Reason,
    SourceRecord,
    dead_letter_event,
    decode_ride,
    prediction_event,
)
from consumer.pipeline.sink import Entry

__all__ = [
    "Accepted",
    "Encoded",
    "KclRecord",
    "Model",
    "Rejected",
    "Scored",
    "decode_records",
    "encode",
    "expire_stale",
    "score",
]


class KclRecord(Protocol):
    """The fields of amazon_kclpy.messages.Record that a batch needs."""

    @property
    def binary_data(self) -> bytes: ...
    @property
    def sequence_number(self) -> str: ...
    @property
    def sub_sequence_number(self) -> int: ...
    @property
    def partition_key(self) -> str: ...
    @property
    def timestamp_millis(self) -> int: ...


class Model(Protocol):
    """Scores rides: one duration in minutes per ride, in order. May raise on rides it cannot handle."""

    def predict(self, rides: Sequence[Ride]) -> Collection[float]: ...  # a list, a numpy array


@dataclass(frozen=True, slots=True)
class Accepted:
    source: SourceRecord
    payload: bytes
    ride: Ride


@dataclass(frozen=True, slots=True)
class Rejected:
    source: SourceRecord
    payload: bytes
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Scored:
    source: SourceRecord
    ride: Ride
    duration: float


@dataclass(frozen=True, slots=True)
class Encoded:
    predictions: list[Entry]
    dead_letters: list[Entry]


def decode_records(records: Iterable[KclRecord], shard_id: str) -> tuple[list[Accepted], list[Rejected]]:
    """Decode and validate each record; a record that is not a valid ride is rejected with its reason."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    for record in records:
        source = SourceRecord(
            shard_id=shard_id,
            sequence_number=record.sequence_number,
            sub_sequence_number=record.sub_sequence_number,
            partition_key=record.partition_key,
            arrival_millis=record.timestamp_millis,
        )
        payload = record.binary_data
        try:
            accepted.append(Accepted(source, payload, decode_ride(payload)))
        except InvalidRide as exc:
            rejected.append(Rejected(source, payload, exc.reason, exc.detail))
    return accepted, rejected


def expire_stale(
    accepted: Sequence[Accepted], *, now_millis: int, max_age_seconds: float | None
) -> tuple[list[Accepted], list[Rejected]]:
    """Lambda's MaximumRecordAge: a ride that arrived more than ``max_age_seconds`` before ``now_millis`` is
    rejected as stale instead of scored (its prediction would come too late to be useful). ``None``: keep all."""
    if max_age_seconds is None:
        return list(accepted), []
    oldest = now_millis - max_age_seconds * 1000
    fresh = [item for item in accepted if item.source.arrival_millis >= oldest]
    stale = [
        Rejected(
            item.source,
            item.payload,
            Reason.STALE,
            f"arrived {(now_millis - item.source.arrival_millis) / 1000:.1f} s ago, over the {max_age_seconds:g} s"
            " maximum record age",
        )
        for item in accepted
        if item.source.arrival_millis < oldest
    ]
    return fresh, stale


def score(model: Model, accepted: Sequence[Accepted]) -> tuple[list[Scored], list[Rejected]]:
    """One predict call for the whole batch. If the model raises, bisect the batch to find the rides that make it
    fail, reject those with the error and score the rest (Lambda's BisectBatchOnFunctionError, inside one call)."""
    if not accepted:
        return [], []
    try:
        durations = list(model.predict([item.ride for item in accepted]))
        if len(durations) != len(accepted):
            raise ValueError(f"model returned {len(durations)} predictions for {len(accepted)} rides")
    except Exception as exc:  # noqa: BLE001 - any model failure is isolated to the rides that cause it
        if len(accepted) == 1:
            item = accepted[0]
            return [], [Rejected(item.source, item.payload, Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}")]
        middle = len(accepted) // 2
        left_scored, left_rejected = score(model, accepted[:middle])
        right_scored, right_rejected = score(model, accepted[middle:])
        return left_scored + right_scored, left_rejected + right_rejected
    scored: list[Scored] = []
    rejected: list[Rejected] = []
    for item, duration in zip(accepted, durations, strict=True):
        value = float(duration)
        if math.isfinite(value):
            scored.append(Scored(item.source, item.ride, value))
        else:
            rejected.append(Rejected(item.source, item.payload, Reason.MODEL_ERROR, f"prediction {value} not finite"))
    return scored, rejected


def encode(scored: Sequence[Scored], rejected: Sequence[Rejected], *, version: str, input_stream: str) -> Encoded:
    """Prediction events keyed by ride id; dead-letter events keyed by the original partition key."""
    return Encoded(
        predictions=[
            Entry(
                prediction_event(item.ride, item.duration, version=version, source=item.source), str(item.ride.ride_id)
            )
            for item in scored
        ],
        dead_letters=[
            Entry(
                dead_letter_event(
                    item.payload,
                    reason=item.reason,
                    detail=item.detail,
                    source=item.source,
                    stream_name=input_stream,
                    version=version,
                ),
                item.source.partition_key,
            )
            for item in rejected
        ],
    )
