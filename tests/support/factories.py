"""Small factories for the tests: ride payloads, KCL-like records, a record processor on in-memory sinks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from consumer.pipeline.batch import Model
from consumer.pipeline.processor import RideProcessor
from consumer.pipeline.sink import MemorySink, Sink
from tests.support.fakes import ConstantModel

__all__ = ["FakeRecord", "records", "ride_payload", "ride_processor"]


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


def ride_processor(
    *,
    model: Model | None = None,
    predictions: Sink | None = None,
    dead_letters: Sink | None = None,
    model_version: str = "7",
    **options: Any,
) -> RideProcessor:
    """A :class:`RideProcessor` of the stream "rides" scoring with ``model`` (a :class:`ConstantModel`), writing to
    ``predictions`` and ``dead_letters`` (new :class:`MemorySink` s), never sleeping between retries; ``options``
    are its other keyword arguments (metrics, clock, max_record_age_seconds...)."""
    options.setdefault("sleep", lambda _: None)
    return RideProcessor(
        model=model or ConstantModel(),
        model_version=model_version,
        predictions=predictions or MemorySink("predictions"),
        dead_letters=dead_letters or MemorySink("dead_letters"),
        input_stream="rides",
        **options,
    )
