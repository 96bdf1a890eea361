"""Small factories for unit tests: ride payloads and KCL-like records."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


def ride_payload(ride_id: int | str = 156, pu: object = 130, do: object = 205, distance: object = 3.66) -> bytes:
    return orjson.dumps(
        {"ride": {"PULocationID": pu, "DOLocationID": do, "trip_distance": distance}, "ride_id": ride_id}
    )


@dataclass(frozen=True)
class FakeRecord:
    binary_data: bytes
    sequence_number: str
    sub_sequence_number: int = 0
    partition_key: str = "pk"
    timestamp_millis: int = 1_700_000_000_000


def records(*payloads: bytes, first_sequence: int = 100) -> list[FakeRecord]:
    return [
        FakeRecord(payload, str(first_sequence + index), partition_key=f"pk-{index}")
        for index, payload in enumerate(payloads)
    ]
