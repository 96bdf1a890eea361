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
    "predict_each",
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


def predict_each(model: Model, rides: Sequence[Ride]) -> list[float | str]:
    """One predict call for all ``rides``: each gets its duration in minutes, or the error as text when the model
    cannot score it. If the call raises, the rides are bisected to find the ones that make it fail (Lambda's
    BisectBatchOnFunctionError, inside one call); a prediction that is not finite is an error too. The stream
    (:func:`score`), the batch command and the web endpoint (:mod:`consumer.serving`) all score through it."""
    if not rides:
        return []
    try:
        durations = list(model.predict(rides))
        if len(durations) != len(rides):
            raise ValueError(f"model returned {len(durations)} predictions for {len(rides)} rides")
    except Exception as exc:  # noqa: BLE001 - any model failure is isolated to the rides that cause it
        if len(rides) == 1:
            return [f"{type(exc).__name__}: {exc}"]
        middle = len(rides) // 2
        return predict_each(model, rides[:middle]) + predict_each(model, rides[middle:])
    outcomes: list[float | str] = []
    for duration in durations:
        value = float(duration)
        outcomes.append(value if math.isfinite(value) else f"prediction {value} not finite")
    return outcomes


def score(model: Model, accepted: Sequence[Accepted]) -> tuple[list[Scored], list[Rejected]]:
    """Score the accepted rides (:func:`predict_each`); a ride the model cannot score is rejected as
    ``model_error`` with the error, the others are scored."""
    scored: list[Scored] = []
    rejected: list[Rejected] = []
    outcomes = predict_each(model, [item.ride for item in accepted])
    for item, outcome in zip(accepted, outcomes, strict=True):
        if isinstance(outcome, float):
            scored.append(Scored(item.source, item.ride, outcome))
        else:
            rejected.append(Rejected(item.source, item.payload, Reason.MODEL_ERROR, outcome))
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
