"""The pure steps of one batch: decode -> validate -> score -> encode. No I/O but the model call.

Every record of a batch leaves these steps with exactly one outcome: a prediction entry for the output stream
or a dead-letter entry carrying its payload and the reason. The processor then puts them and checkpoints.
The one exception is a broken model (:class:`~consumer.errors.ModelBroken`): then no ride is at fault, nothing is
dead-lettered, and the batch fails.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from consumer.errors import ModelBroken
from consumer.model.features import PROBE_RIDES, Ride
from consumer.pipeline.deadline import Deadline
from consumer.pipeline.events import (
    InvalidRide,
    Reason,
    SourceRecord,
    dead_letter_event,
    decode_ride,
    prediction_event,
    unusual,
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
    unusual: tuple[str, ...] = ()  # what is odd about it (consumer.pipeline.events.Unusual); scored all the same


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
    """Decode and validate each record; a record that is not a valid ride is rejected with its reason, a valid one
    is accepted with what is unusual about it."""
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
            ride = decode_ride(payload)
        except InvalidRide as exc:
            rejected.append(Rejected(source, payload, exc.reason, exc.detail))
        else:
            accepted.append(Accepted(source, payload, ride, unusual(ride)))
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


def predict_each(model: Model, rides: Sequence[Ride], *, deadline: Deadline | None = None) -> list[float | str]:
    """One predict call for all ``rides``: each gets its duration in minutes, or the error as text when the model
    cannot score it. If the call raises, the rides are bisected to find the ones that make it fail (Lambda's
    BisectBatchOnFunctionError, inside one call); a prediction that is not finite is an error too. No predict call
    starts after ``deadline``. The stream (:func:`score`), the batch command and the web endpoint
    (:mod:`consumer.serving`) all score through it."""
    deadline = deadline or Deadline.none()
    if not rides:
        return []
    deadline.check("before scoring")
    try:
        return _outcomes(_predict(model, rides))
    except Exception as exc:  # noqa: BLE001 - any model failure is isolated to the rides that cause it
        return _bisect(model, rides, f"{type(exc).__name__}: {exc}", deadline)


def score(
    model: Model,
    accepted: Sequence[Accepted],
    *,
    probe: Sequence[Ride] = PROBE_RIDES,
    deadline: Deadline | None = None,
) -> tuple[list[Scored], list[Rejected]]:
    """Score the accepted rides with one predict call for the whole batch.

    If the model fails on all of it (raises, or gives no finite prediction at all), it is asked to score ``probe``,
    rides it scored when it was prepared. If it fails on those too, the model is broken, not the rides: raise
    :class:`~consumer.errors.ModelBroken` (the batch fails, nothing is dead-lettered). Otherwise the rides that make
    it fail are isolated (:func:`predict_each`) and rejected as ``model_error`` with the error; the rest are scored.
    No predict call starts after ``deadline``.
    """
    deadline = deadline or Deadline.none()
    if not accepted:
        return [], []
    rides = [item.ride for item in accepted]
    deadline.check("before scoring")
    try:
        outcomes = _outcomes(_predict(model, rides))
    except Exception as exc:  # noqa: BLE001 - the model, or some rides? The probe tells.
        error = f"{type(exc).__name__}: {exc}"
        _require_working(model, probe, len(rides), error, deadline)
        outcomes = _bisect(model, rides, error, deadline)
    else:
        if not any(isinstance(outcome, float) for outcome in outcomes):
            _require_working(model, probe, len(rides), str(outcomes[0]), deadline)
    scored: list[Scored] = []
    rejected: list[Rejected] = []
    for item, outcome in zip(accepted, outcomes, strict=True):
        if isinstance(outcome, float):
            scored.append(Scored(item.source, item.ride, outcome))
        else:
            rejected.append(Rejected(item.source, item.payload, Reason.MODEL_ERROR, outcome))
    return scored, rejected


def _predict(model: Model, rides: Sequence[Ride]) -> list[float]:
    durations = [float(duration) for duration in model.predict(rides)]
    if len(durations) != len(rides):
        raise ValueError(f"model returned {len(durations)} predictions for {len(rides)} rides")
    return durations


def _outcomes(durations: Sequence[float]) -> list[float | str]:
    return [value if math.isfinite(value) else f"prediction {value} not finite" for value in durations]


def _bisect(model: Model, rides: Sequence[Ride], error: str, deadline: Deadline) -> list[float | str]:
    """``rides`` made the model fail with ``error``: a single ride keeps the error, more are split in halves."""
    if len(rides) == 1:
        return [error]
    deadline.check("while isolating the rides the model fails on")
    middle = len(rides) // 2
    left = predict_each(model, rides[:middle], deadline=deadline)
    return left + predict_each(model, rides[middle:], deadline=deadline)


def _require_working(model: Model, probe: Sequence[Ride], rides: int, error: str, deadline: Deadline) -> None:
    """Raise ModelBroken unless the model scores ``probe`` (finite predictions); without probe rides nothing tells
    a broken model from bad rides, and the rides are blamed (dead-lettered) as before there was a probe."""
    if not probe:
        return
    deadline.check("before asking the model to score the probe rides")
    try:
        if all(math.isfinite(value) for value in _predict(model, probe)):
            return
        failure = "predictions that are not finite"
    except Exception as exc:  # noqa: BLE001 - any failure on rides it used to score means the same
        failure = f"{type(exc).__name__}: {exc}"
    raise ModelBroken(
        f"the model failed on all {rides} rides of the batch ({error}) and on the {len(probe)} probe rides it"
        f" scored when it was prepared ({failure})"
    )


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
