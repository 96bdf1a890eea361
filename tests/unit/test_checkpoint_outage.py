"""A lease table that cannot be reached (the daemon answers RuntimeException) is retried long enough to ride out
a lease store restart, then fails loudly."""

import pytest
from amazon_kclpy.checkpoint_error import CheckpointError

from consumer.errors import CheckpointFailed
from consumer.pipeline.checkpointing import Checkpointed, checkpoint


class Unreachable:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def checkpoint(self, sequence_number=None, sub_sequence_number=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise CheckpointError("RuntimeException")


def test_an_unreachable_lease_table_is_retried_with_at_least_sixteen_seconds_of_backoff():
    sleeps: list[float] = []
    checkpointer = Unreachable(failures=7)
    assert checkpoint(checkpointer, "42", 0, sleep=sleeps.append) is Checkpointed.DONE
    assert checkpointer.calls == 8
    assert sum(sleeps) >= 16


def test_a_lease_table_unreachable_for_longer_fails_loudly():
    with pytest.raises(CheckpointFailed, match="RuntimeException on each of 8 attempts"):
        checkpoint(Unreachable(failures=8), "42", 0, sleep=lambda _: None)
