"""The model's input: a ride, and the one function that turns it into the features the pipeline was trained on.

Training builds its rows with :func:`features` and every scorer calls it, so training and serving cannot drift.
:data:`PROBE_RIDES` are ordinary rides any model of this service scores: preparing a model checks that it does,
and a shard that sees its model fail on a whole batch asks it again to tell a broken model from bad rides.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROBE_RIDES", "Ride", "features"]


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


#: Ordinary rides of January 2022 (common zone pairs, everyday distances), ids that no producer sends.
PROBE_RIDES: tuple[Ride, ...] = (
    Ride(ride_id="probe-1", pu_location_id=130, do_location_id=205, trip_distance=3.66),
    Ride(ride_id="probe-2", pu_location_id=74, do_location_id=75, trip_distance=1.2),
    Ride(ride_id="probe-3", pu_location_id=41, do_location_id=42, trip_distance=0.9),
    Ride(ride_id="probe-4", pu_location_id=82, do_location_id=138, trip_distance=5.4),
    Ride(ride_id="probe-5", pu_location_id=7, do_location_id=7, trip_distance=0.5),
)
