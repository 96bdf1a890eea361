"""The held-out rides every section rides: the last week of the TLC file, which the model never saw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Rides", "heldout_rides"]


@dataclass(frozen=True)
class Rides:
    """The held-out rides as the producer sends them, and as feature rows."""

    payloads: list[bytes]
    rows: list[dict[str, Any]]

    def cycle(self, count: int, *, start_id: int = 1) -> list[tuple[bytes, str]]:
        """``count`` payloads (repeating the week if needed) with unique ride ids from ``start_id``."""
        out = []
        for i in range(count):
            event = orjson.loads(self.payloads[i % len(self.payloads)])
            event["ride_id"] = start_id + i
            out.append((orjson.dumps(event), str(start_id + i)))
        return out


def heldout_rides(trips: str) -> Rides:
    """The last week of ``trips`` (a TLC parquet, path or URL) as ride events and feature rows."""
    from consumer.tools.training import feature_rows, read_trips, split_last_week

    _, heldout, _ = split_last_week(read_trips(trips))
    payloads = [
        orjson.dumps({"ride": {"PULocationID": pu, "DOLocationID": do, "trip_distance": miles}, "ride_id": i})
        for i, (pu, do, miles) in enumerate(
            zip(
                heldout["PULocationID"].astype("int64").tolist(),
                heldout["DOLocationID"].astype("int64").tolist(),
                heldout["trip_distance"].astype("float64").tolist(),
                strict=True,
            ),
            start=1,
        )
    ]
    return Rides(payloads, feature_rows(heldout))
