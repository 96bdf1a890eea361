"""One deadline per batch: everything a batch does (scoring, every PutRecords call with its retries and backoff,
the checkpoint with its retries) must be over by then, or the batch fails as a spent retry budget does.

The daemon halts when a processor has not answered for ``timeoutInSeconds``: a batch that fails first stops its
shard cleanly instead (exit 1, no checkpoint, the shard resumes from its last checkpoint), with a line that says
what it was doing. A step that has started is not interrupted (a PutRecords call is bounded by its client's
timeouts), so the deadline must leave that much room below ``timeoutInSeconds``; the launcher checks it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from tenacity import RetryCallState, stop_after_attempt

from consumer.errors import BatchDeadlineExceeded

__all__ = ["Deadline", "StopWithin"]


class Deadline:
    """``seconds`` from now on ``clock`` (monotonic); None: no deadline."""

    def __init__(self, seconds: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._ends = None if seconds is None else clock() + seconds

    @classmethod
    def none(cls) -> Deadline:
        """No deadline: every check passes (calls outside a batch, e.g. the checkpoint at SHARD_END)."""
        return cls(None)

    def remaining(self) -> float:
        """Seconds left (infinite without a deadline, never negative)."""
        if self._ends is None:
            return math.inf
        return max(0.0, self._ends - self._clock())

    def allows(self, wait_seconds: float) -> bool:
        """Whether waiting ``wait_seconds`` still leaves time to try again."""
        return wait_seconds < self.remaining()

    def check(self, doing: str) -> None:
        """Raise :class:`BatchDeadlineExceeded` saying what was about to happen if the deadline has passed."""
        if self.seconds is not None and self.remaining() <= 0:
            raise BatchDeadlineExceeded(self.seconds, doing)

    def exceeded(self, doing: str) -> BatchDeadlineExceeded:
        """The error to raise when a retry loop stops because the next wait would pass the deadline."""
        return BatchDeadlineExceeded(self.seconds or 0.0, doing)


class StopWithin:
    """A tenacity ``stop``: after ``max_attempts``, or when the next backoff would end after ``deadline``; then
    :attr:`out_of_time` says which of the two stopped it (the caller raises :meth:`Deadline.exceeded` for the
    latter)."""

    def __init__(self, max_attempts: int, deadline: Deadline) -> None:
        self._attempts = stop_after_attempt(max_attempts)
        self._deadline = deadline
        self.out_of_time = False

    def __call__(self, state: RetryCallState) -> bool:
        if self._attempts(state):
            return True
        if not self._deadline.allows(state.upcoming_sleep):
            self.out_of_time = True
            return True
        return False
