"""A lease table that cannot be reached (the daemon answers RuntimeException) is retried long enough to ride out
a lease store restart, then fails loudly."""

import pytest

from consumer.errors import CheckpointFailed
from consumer.pipeline.checkpointing import Checkpointed, checkpoint
from tests.support.fakes import FakeCheckpointer


def unreachable(failures: int) -> FakeCheckpointer:
    """A lease table the daemon cannot reach for ``failures`` checkpoints, then can."""
    return FakeCheckpointer(*["RuntimeException"] * failures)


def test_an_unreachable_lease_table_is_retried_with_at_least_sixteen_seconds_of_backoff():
    sleeps: list[float] = []
    checkpointer = unreachable(failures=7)
    assert checkpoint(checkpointer, "42", 0, sleep=sleeps.append) is Checkpointed.DONE
    assert len(checkpointer.calls) == 8
    assert sum(sleeps) >= 16


def test_a_lease_table_unreachable_for_longer_fails_loudly():
    with pytest.raises(CheckpointFailed, match="RuntimeException on each of 8 attempts"):
        checkpoint(unreachable(failures=8), "42", 0, sleep=lambda _: None)
