import pytest

from consumer.errors import CheckpointFailed
from consumer.pipeline.checkpointing import Checkpointed, checkpoint
from tests.support.fakes import FakeCheckpointer


def test_a_checkpoint_is_taken_at_the_given_record():
    checkpointer = FakeCheckpointer(None)
    assert checkpoint(checkpointer, "42", 0, sleep=lambda _: None) is Checkpointed.DONE
    assert checkpointer.calls == [("42", 0)]


@pytest.mark.parametrize("error", ["ThrottlingException", "KinesisClientLibDependencyException"])
def test_throttling_is_retried_with_backoff(error):
    checkpointer = FakeCheckpointer(error, error, None)
    sleeps: list[float] = []
    assert checkpoint(checkpointer, "42", 0, sleep=sleeps.append) is Checkpointed.DONE
    assert len(checkpointer.calls) == 3
    assert len(sleeps) == 2


def test_endless_throttling_gives_up_after_the_attempt_budget():
    checkpointer = FakeCheckpointer(*["ThrottlingException"] * 4)
    with pytest.raises(CheckpointFailed, match="ThrottlingException on each of 4 attempts"):
        checkpoint(checkpointer, "42", 0, max_attempts=4, sleep=lambda _: None)


def test_a_shutdown_exception_means_the_lease_is_gone():
    checkpointer = FakeCheckpointer("ShutdownException")
    assert checkpoint(checkpointer, "42", 0, sleep=lambda _: None) is Checkpointed.LEASE_LOST
    assert len(checkpointer.calls) == 1


@pytest.mark.parametrize("error", ["InvalidStateException", "SomethingNew"])
def test_an_invalid_state_fails_loudly_without_retry(error):
    checkpointer = FakeCheckpointer(error)
    with pytest.raises(CheckpointFailed, match=error) as caught:
        checkpoint(checkpointer, "42", 0, sleep=lambda _: pytest.fail("must not retry"))
    assert caught.value.sequence_number == "42"
