"""Fakes of what the record processor is handed: amazon_kclpy's checkpointer and inputs, and a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amazon_kclpy.checkpoint_error import CheckpointError

__all__ = ["ConstantModel", "FakeCheckpointer", "FakeInput"]


class FakeCheckpointer:
    """Answers each ``checkpoint`` call with the next scripted error name (``None``: success), then succeeds once
    the script is used up. ``calls`` holds every ``(sequence_number, sub_sequence_number)`` asked for, in order;
    ``(None, None)`` is a checkpoint at SHARD_END."""

    def __init__(self, *errors: str | None) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[str | None, int | None]] = []

    def checkpoint(self, sequence_number: str | None = None, sub_sequence_number: int | None = None) -> None:
        self.calls.append((sequence_number, sub_sequence_number))
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise CheckpointError(error)


@dataclass
class FakeInput:
    """The fields of amazon_kclpy's initialize / processRecords / shardEnded / shutdownRequested inputs that the
    processor reads."""

    records: list[Any] | None = None
    checkpointer: Any = None
    millis_behind_latest: int | None = None
    shard_id: str = "shardId-000000000003"
    sequence_number: str = "TRIM_HORIZON"


class ConstantModel:
    """Predicts the same duration for every ride."""

    def __init__(self, minutes: float = 12.5) -> None:
        self.minutes = minutes

    def predict(self, rides: Sequence[Any]) -> list[float]:
        return [self.minutes for _ in rides]
