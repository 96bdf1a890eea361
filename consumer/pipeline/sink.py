"""Writing events to a Kinesis stream: PutRecords in chunks within the service limits, resending only what failed.

A :class:`Sink` either writes every entry it is given or raises :class:`~consumer.errors.SinkError` (or
:class:`~consumer.errors.BatchDeadlineExceeded` when the batch's :class:`~consumer.pipeline.deadline.Deadline`
passes first); the processor checkpoints only after ``put`` returns. :class:`MemorySink` is the in-memory twin for
tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from structlog.typing import FilteringBoundLogger
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from consumer.errors import SinkError
from consumer.pipeline.deadline import Deadline, StopWithin

__all__ = [
    "MAX_BYTES_PER_PUT",
    "MAX_BYTES_PER_RECORD",
    "MAX_RECORDS_PER_PUT",
    "Entry",
    "KinesisSink",
    "MemorySink",
    "NullSink",
    "PutResult",
    "PutsRecords",
    "Sink",
    "chunked",
]

#: PutRecords limits: 500 records and 5 MiB per call, 1 MiB per record (data plus partition key).
MAX_RECORDS_PER_PUT = 500
MAX_BYTES_PER_PUT = 5 * 1024 * 1024
MAX_BYTES_PER_RECORD = 1024 * 1024

#: Whole-call errors worth another try; anything else (a missing stream, denied access) will not heal by waiting.
RETRYABLE_ERROR_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "LimitExceededException",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "KMSThrottlingException",
    }
)
RETRYABLE_TRANSPORT_ERRORS = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)


@dataclass(frozen=True, slots=True)
class Entry:
    """One record to write."""

    data: bytes
    partition_key: str

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class PutResult:
    """Where one entry was written."""

    shard_id: str
    sequence_number: str


class PutsRecords(Protocol):
    """A Kinesis client's ``put_records(StreamName=..., Records=[{"Data": bytes, "PartitionKey": str}])``: the
    processors' :class:`~consumer.runtime.putrecords.PutRecordsClient`, or boto3's client (the tools). It answers
    as boto3 does and raises botocore's exceptions."""

    @property
    def put_records(self) -> Callable[..., Mapping[str, Any]]: ...


class Sink(Protocol):
    """Where events go.

    Contract: ``put`` returns only when every entry is durably accepted by the stream (with where each one landed,
    in the order given), and raises :class:`SinkError` otherwise, or :class:`BatchDeadlineExceeded` when
    ``deadline`` passes first. Entries may be written more than once (at-least-once) but never dropped.
    """

    stream_name: str

    def put(self, entries: Sequence[Entry], *, deadline: Deadline | None = None) -> list[PutResult]: ...


def chunked(entries: Sequence[Entry]) -> Iterator[list[Entry]]:
    """Split entries into PutRecords calls of at most 500 records and 5 MiB; refuse a record Kinesis would refuse
    on its own (over 1 MiB, or a partition key outside 1 to 256 characters)."""
    chunk: list[Entry] = []
    chunk_bytes = 0
    for entry in entries:
        size = entry.size
        if size > MAX_BYTES_PER_RECORD:
            raise ValueError(f"a record of {size} bytes is over the 1 MiB Kinesis limit")
        if not 1 <= len(entry.partition_key) <= 256:
            raise ValueError(f"a partition key has 1 to 256 characters, got {len(entry.partition_key)}")
        if chunk and (len(chunk) == MAX_RECORDS_PER_PUT or chunk_bytes + size > MAX_BYTES_PER_PUT):
            yield chunk
            chunk, chunk_bytes = [], 0
        chunk.append(entry)
        chunk_bytes += size
    if chunk:
        yield chunk


class _SomeNotWritten(Exception):
    """Internal: this attempt left entries unwritten; tenacity tries again."""

    def __init__(self, cause: str, pending: int) -> None:
        super().__init__(cause)
        self.cause = cause
        self.pending = pending


class KinesisSink:
    """PutRecords to one stream with capped exponential backoff and full jitter between attempts.

    Only the entries that failed are sent again (matched by position in the response). The client should not retry
    on its own (the processors' never does; a boto3 client needs ``max_attempts=1``) so that this loop is the only
    one and its budget is known. The
    budget is ``max_attempts`` per chunk, within the batch's deadline: no call starts after it, and no backoff
    that would end after it is waited.
    """

    def __init__(
        self,
        client: PutsRecords,
        stream_name: str,
        *,
        max_attempts: int = 8,
        backoff_max_seconds: float = 5.0,
        backoff_first_seconds: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[int], None] | None = None,
    ) -> None:
        self.stream_name = stream_name
        self._client = client
        self._max_attempts = max_attempts
        self._wait = wait_random_exponential(multiplier=backoff_first_seconds, max=backoff_max_seconds)
        self._sleep = sleep
        self._on_retry = on_retry
        self._log: FilteringBoundLogger = structlog.get_logger(stream_name=stream_name)

    def put(self, entries: Sequence[Entry], *, deadline: Deadline | None = None) -> list[PutResult]:
        deadline = deadline or Deadline.none()
        written: list[PutResult] = []
        for chunk in chunked(entries):
            written.extend(self._put_chunk(chunk, deadline))
        return written

    def _put_chunk(self, chunk: list[Entry], deadline: Deadline) -> list[PutResult]:
        results: list[PutResult | None] = [None] * len(chunk)
        pending = list(range(len(chunk)))  # positions in chunk still to write
        stop = StopWithin(self._max_attempts, deadline)

        retrying = Retrying(
            stop=stop,
            wait=self._wait,
            retry=retry_if_exception_type(_SomeNotWritten),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    deadline.check(f"before PutRecords to {self.stream_name} ({len(pending)} records to write)")
                    pending, cause = self._attempt(chunk, pending, results)
                    if pending:
                        raise _SomeNotWritten(cause, len(pending))
        except _SomeNotWritten as exc:
            if stop.out_of_time:
                raise deadline.exceeded(
                    f"while writing to {self.stream_name}: {exc.pending} of {len(chunk)} records still not written"
                    f" (last error: {exc.cause})"
                ) from None
            raise SinkError(
                f"{exc.pending} of {len(chunk)} records still not written after {self._max_attempts} attempts "
                f"(last error: {exc.cause})",
                stream_name=self.stream_name,
                unwritten=exc.pending,
                retryable=True,
            ) from None
        return [result for result in results if result is not None]

    def _attempt(
        self, chunk: list[Entry], pending: list[int], results: list[PutResult | None]
    ) -> tuple[list[int], str]:
        """One PutRecords call for the ``pending`` positions of ``chunk``; fill ``results`` for those written and
        return the positions still unwritten and why. Raise SinkError when waiting cannot help."""
        try:
            response = self._client.put_records(
                StreamName=self.stream_name,
                Records=[{"Data": chunk[i].data, "PartitionKey": chunk[i].partition_key} for i in pending],
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            if code in RETRYABLE_ERROR_CODES:
                return pending, code
            message = exc.response.get("Error", {}).get("Message", str(exc))
            raise SinkError(
                f"PutRecords refused with {code}: {message}",
                stream_name=self.stream_name,
                unwritten=len(pending),
                retryable=False,
            ) from exc
        except RETRYABLE_TRANSPORT_ERRORS as exc:
            return pending, f"{type(exc).__name__}: {exc}"
        except BotoCoreError as exc:
            raise SinkError(
                f"PutRecords failed: {type(exc).__name__}: {exc}",
                stream_name=self.stream_name,
                unwritten=len(pending),
                retryable=False,
            ) from exc
        failed: list[tuple[int, str]] = []
        for index, result in zip(pending, response["Records"], strict=True):
            if result.get("ErrorCode"):
                failed.append((index, result["ErrorCode"]))
            else:
                results[index] = PutResult(result["ShardId"], result["SequenceNumber"])
        codes = ", ".join(sorted({code for _, code in failed}))
        return [index for index, _ in failed], f"{len(failed)} entries failed: {codes}" if failed else ""

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        pending = exc.pending if isinstance(exc, _SomeNotWritten) else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self._log.warning(
            "put_records_retry",
            attempt=state.attempt_number,
            unwritten=pending,
            cause=getattr(exc, "cause", str(exc)),
            backoff_seconds=round(delay, 3),
        )
        if self._on_retry is not None and pending is not None:
            self._on_retry(pending)


@dataclass
class MemorySink:
    """In-memory twin of KinesisSink for tests: records what was written; can be told to fail."""

    stream_name: str
    written: list[Entry] = field(default_factory=list)
    fail_with: SinkError | None = None

    def put(self, entries: Sequence[Entry], *, deadline: Deadline | None = None) -> list[PutResult]:
        if deadline is not None:
            deadline.check(f"before writing to {self.stream_name}")
        if self.fail_with is not None:
            raise self.fail_with
        results: list[PutResult] = []
        for chunk in chunked(entries):
            for entry in chunk:
                self.written.append(entry)
                results.append(PutResult("memory", str(len(self.written))))
        return results


@dataclass
class NullSink:
    """Drops every entry (still checking the record limits) and counts them: the benchmark's sink, so the cost of
    the output stream can be told apart from the processor's. Never used unless BENCH_DISCARD_OUTPUT=true, which
    the settings accept only against a loopback Kinesis endpoint."""

    stream_name: str
    discarded: int = 0

    def put(self, entries: Sequence[Entry], *, deadline: Deadline | None = None) -> list[PutResult]:
        results: list[PutResult] = []
        for chunk in chunked(entries):
            self.discarded += len(chunk)
            results.extend(PutResult("discarded", "0") for _ in chunk)
        return results
