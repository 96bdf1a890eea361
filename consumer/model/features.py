"""The model's input: a ride, and the one function that turns it into the features the pipeline was trained on.

Training builds its rows with :func:`features` and every scorer calls it, so training and serving cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Ride", "features"]


@dataclass(frozen=True, slots=True)
class Ride:
    """One ride, validated. ``ride_id`` is whatever the producer sent (an int or a string)."""

    ride_id: int | str
    pu_location_id: int
    do_location_id: int
    trip_distance: float


def features(ride: Ride) -> dict[str, str | float]:
    """The model's input for one ride, e.g. ``{"PU_DO": "130_205", "trip_distance": 3.66}``."""
    return {
        "PU_DO": f"{ride.pu_location_id}_{ride.do_location_id}",
        "trip_distance": float(ride.trip_distance),
    }
