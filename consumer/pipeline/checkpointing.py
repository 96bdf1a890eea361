"""The whole checkpoint policy in one function.

The daemon answers a checkpoint request with the name of the Java exception it hit, if any:

- ``ThrottlingException`` / ``KinesisClientLibDependencyException``: DynamoDB is busy or briefly unreachable;
  back off and try again, a bounded number of times. ``RuntimeException`` too: that is how KCL 2.5 reports a
  lease table it cannot reach at all (connection refused or timed out, an SDK client error it wraps); the budget
  (8 attempts, at least 16 s of backoff) rides out a lease store restart.
- ``ShutdownException``: the lease is gone (another worker has the shard). Stop; the new owner replays from the
  last checkpoint, so nothing is lost.
- ``InvalidStateException`` and anything unknown: the lease table or the daemon is broken; fail loudly.

Within a batch the retries also stop at the batch's deadline (:mod:`consumer.pipeline.deadline`): no attempt
starts after it and no backoff that would end after it is waited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from amazon_kclpy.checkpoint_error import CheckpointError
from structlog.typing import FilteringBoundLogger
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from consumer.errors import CheckpointFailed
from consumer.pipeline.deadline import Deadline, StopWithin

__all__ = ["Checkpointed", "Checkpointer", "checkpoint"]

RETRYABLE = frozenset({"ThrottlingException", "KinesisClientLibDependencyException", "RuntimeException"})
LEASE_GONE = "ShutdownException"


class Checkpointer(Protocol):
    """amazon_kclpy's checkpointer: raises CheckpointError(name of the Java exception) on failure."""

    def checkpoint(self, sequence_number: str | None = None, sub_sequence_number: int | None = None) -> None: ...


class Checkpointed(Enum):
    """What became of a checkpoint request."""

    DONE = "done"
    LEASE_LOST = "lease_lost"


def _error_name(exc: BaseException) -> str:
    return str(getattr(exc, "value", exc))


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, CheckpointError) and _error_name(exc) in RETRYABLE


def _log_retry(log: FilteringBoundLogger) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("checkpoint_retry", attempt=state.attempt_number, error=_error_name(error) if error else None)

    return before_sleep


def checkpoint(
    checkpointer: Checkpointer,
    sequence_number: str | None = None,
    sub_sequence_number: int | None = None,
    *,
    max_attempts: int = 8,
    backoff_max_seconds: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    log: FilteringBoundLogger | None = None,
    deadline: Deadline | None = None,
) -> Checkpointed:
    """Checkpoint at ``sequence_number`` (the end of the delivered records when None) under the policy above;
    raise :class:`~consumer.errors.BatchDeadlineExceeded` when ``deadline`` passes first."""
    deadline = deadline or Deadline.none()
    stop = StopWithin(max_attempts, deadline)

    retrying = Retrying(
        stop=stop,
        # 0.2, 0.4, ... 5 s plus up to 0.5 s of jitter: a floor under the total wait, unlike full jitter.
        wait=wait_exponential_jitter(multiplier=0.2, max=backoff_max_seconds, jitter=0.5),
        retry=retry_if_exception(_is_retryable),
        sleep=sleep,
        before_sleep=_log_retry(log) if log is not None else None,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                deadline.check(f"before checkpointing at {sequence_number}")
                checkpointer.checkpoint(sequence_number, sub_sequence_number)
    except CheckpointError as exc:
        name = _error_name(exc)
        if name == LEASE_GONE:
            return Checkpointed.LEASE_LOST
        if stop.out_of_time:
            raise deadline.exceeded(f"while checkpointing at {sequence_number} (last error: {name})") from None
        if name in RETRYABLE:
            raise CheckpointFailed(
                f"{name} on each of {max_attempts} attempts", sequence_number=sequence_number
            ) from None
        raise CheckpointFailed(name, sequence_number=sequence_number) from None
    return Checkpointed.DONE
