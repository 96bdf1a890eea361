"""What the batch command and the web endpoint share: the model prepared once from the settings, and rows of ride
fields validated and scored with the stream's own rules.

The model is prepared by :func:`consumer.runtime.preparation.prepare_model`, once, before anything long-lived
starts. Scoring needs only the prepared directory (:func:`consumer.model.scorer.load_prepared`: onnxruntime
and numpy on the fast path).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consumer.model.features import Ride
from consumer.pipeline.batch import Model, predict_each
from consumer.pipeline.events import InvalidRide, Reason, validate_ride

__all__ = ["Rejection", "score_rows"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a row was not scored: one of :class:`consumer.pipeline.events.Reason` and a sentence."""

    reason: str
    detail: str


def score_rows(
    model: Model, rows: Iterable[Mapping[str, Any]], ride_ids: Sequence[int | str]
) -> list[float | Rejection]:
    """For each row of ride fields (``PULocationID``, ``DOLocationID``, ``trip_distance``), in order: its duration in
    minutes, or why it cannot be scored (the stream's validation, then one predict call for the valid rows, model
    errors isolated to the rows that cause them)."""
    outcomes: list[float | Rejection] = []
    rides: list[Ride] = []
    positions: list[int] = []
    for position, (fields, ride_id) in enumerate(zip(rows, ride_ids, strict=True)):
        try:
            rides.append(validate_ride(fields, ride_id))
        except InvalidRide as exc:
            outcomes.append(Rejection(exc.reason, exc.detail))
            continue
        positions.append(position)
        outcomes.append(0.0)  # placeholder, set below
    for position, outcome in zip(positions, predict_each(model, rides), strict=True):
        outcomes[position] = outcome if isinstance(outcome, float) else Rejection(Reason.MODEL_ERROR, outcome)
    return outcomes
