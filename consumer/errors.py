"""The exceptions of the consumer: one root, each carrying the data an operator needs."""

from __future__ import annotations

__all__ = [
    "BatchDeadlineExceeded",
    "CheckpointFailed",
    "ConsumerError",
    "DaemonSetupError",
    "ModelBroken",
    "ModelError",
    "SettingsError",
    "SinkError",
]


class ConsumerError(Exception):
    """Root of every error this package raises on purpose."""


class SettingsError(ConsumerError):
    """A setting is missing or invalid; the message names the environment variable."""


class DaemonSetupError(ConsumerError):
    """The KCL daemon cannot be started: missing or tampered jars, no java, a bad properties template."""


class ModelError(ConsumerError):
    """A model cannot be resolved, downloaded, trusted or loaded. The message names the URI or directory."""


class SinkError(ConsumerError):
    """Records could not be written to a stream; nothing past them may be checkpointed.

    ``unwritten`` is how many entries of the put are still not written, ``stream_name`` where they were going.
    """

    def __init__(self, message: str, *, stream_name: str, unwritten: int, retryable: bool) -> None:
        super().__init__(f"{stream_name}: {message}")
        self.stream_name = stream_name
        self.unwritten = unwritten
        self.retryable = retryable


class CheckpointFailed(ConsumerError):
    """The daemon refused a checkpoint in a way that retrying cannot fix (e.g. InvalidStateException)."""

    def __init__(self, error: str, *, sequence_number: str | None) -> None:
        super().__init__(f"checkpoint at {sequence_number} failed: {error}")
        self.error = error
        self.sequence_number = sequence_number


class BatchDeadlineExceeded(ConsumerError):
    """A batch ran out of time (BATCH_DEADLINE_SECONDS) before it was written and checkpointed: it fails as a spent
    retry budget does, and is replayed from the last checkpoint."""

    def __init__(self, seconds: float, doing: str) -> None:
        super().__init__(f"the batch deadline of {seconds:g} s (BATCH_DEADLINE_SECONDS) passed {doing}")
        self.seconds = seconds
        self.doing = doing


class ModelBroken(ConsumerError):
    """The model failed on a whole batch and on the probe rides it scored when it was prepared: the model is
    broken, not the rides, and none of them is dead-lettered."""
