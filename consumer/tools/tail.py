"""Read a stream from TRIM_HORIZON across all its shards: a debugging tool and the test suite's eyes.

:class:`StreamReader` lists the shards, reads parents before their children (so the records of one partition key
come out in order across a resharding) and follows child shards announced by GetRecords. :func:`read_all` polls
until a number of records arrived or a timeout passed; :func:`print_records` writes records as JSON lines (this
is a command-line tool, so stdout is the right place; the record processor never uses this module).
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import orjson

from consumer.runtime.aws import KinesisClient
from consumer.tools.streams import list_shards

__all__ = [
    "StreamReader",
    "TailedRecord",
    "decode_dead_letter",
    "iter_records",
    "print_records",
    "read_all",
    "record_json",
]

_GET_RECORDS_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class TailedRecord:
    """One record as read. ``event`` is the decoded JSON, or ``None`` with ``error`` saying why."""

    shard_id: str
    sequence_number: str
    partition_key: str
    arrival: datetime | None
    data: bytes
    event: Any
    error: str | None = None


def _decode(data: bytes) -> tuple[Any, str | None]:
    try:
        return orjson.loads(data), None
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"


@dataclass
class _Shard:
    shard_id: str
    parents: frozenset[str]
    iterator: str | None = None
    closed: bool = False
    last_sequence: str | None = None
    drained: bool = False  # the last GetRecords returned nothing and was not behind


class StreamReader:
    """Every shard of a stream from TRIM_HORIZON; call :meth:`poll` repeatedly.

    A shard is read once all of its parents that still exist have been read to their end. Child shards come from
    the listing at start and from the ``ChildShards`` of a parent's last GetRecords. An expired iterator is
    renewed after the last sequence number read.
    """

    def __init__(self, client: KinesisClient, stream_name: str) -> None:
        self.client = client
        self.stream_name = stream_name
        self._shards: dict[str, _Shard] = {}
        for shard in list_shards(client, stream_name):
            parents = {shard.get("ParentShardId"), shard.get("AdjacentParentShardId")} - {None}
            self._add(shard["ShardId"], parents)

    def _add(self, shard_id: str, parents: set[str | None] | set[str]) -> None:
        if shard_id not in self._shards:
            self._shards[shard_id] = _Shard(shard_id, frozenset(p for p in parents if p is not None))

    def _ready(self, shard: _Shard) -> bool:
        return not shard.closed and all(self._shards[p].closed for p in shard.parents if p in self._shards)

    @property
    def shard_ids(self) -> list[str]:
        """The shards known so far, open and closed."""
        return sorted(self._shards)

    @property
    def caught_up(self) -> bool:
        """True when the last poll read every readable shard to its current end."""
        readable = [s for s in self._shards.values() if self._ready(s)]
        return all(s.drained for s in readable)

    def _iterator(self, shard: _Shard) -> str:
        if shard.last_sequence is None:
            response = self.client.get_shard_iterator(
                StreamName=self.stream_name, ShardId=shard.shard_id, ShardIteratorType="TRIM_HORIZON"
            )
        else:  # the iterator expired: go on after the last record read
            response = self.client.get_shard_iterator(
                StreamName=self.stream_name,
                ShardId=shard.shard_id,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                StartingSequenceNumber=shard.last_sequence,
            )
        return response["ShardIterator"]

    def poll(self) -> list[TailedRecord]:
        """One GetRecords on each readable shard; the records that arrived, shard by shard."""
        records: list[TailedRecord] = []
        for shard in [s for s in self._shards.values() if self._ready(s)]:
            records.extend(self._read(shard))
        return records

    def _read(self, shard: _Shard) -> list[TailedRecord]:
        if shard.iterator is None:
            shard.iterator = self._iterator(shard)
        try:
            response = self.client.get_records(ShardIterator=shard.iterator, Limit=_GET_RECORDS_LIMIT)
        except self.client.exceptions.ExpiredIteratorException:
            shard.iterator = self._iterator(shard)
            return []
        except self.client.exceptions.ProvisionedThroughputExceededException:
            return []  # botocore already retried; the next poll tries again
        records = []
        for record in response["Records"]:
            event, error = _decode(record["Data"])
            records.append(
                TailedRecord(
                    shard_id=shard.shard_id,
                    sequence_number=record["SequenceNumber"],
                    partition_key=record["PartitionKey"],
                    arrival=record.get("ApproximateArrivalTimestamp"),
                    data=record["Data"],
                    event=event,
                    error=error,
                )
            )
        if records:
            shard.last_sequence = records[-1].sequence_number
        shard.drained = not records and not response.get("MillisBehindLatest")
        shard.iterator = response.get("NextShardIterator")
        if shard.iterator is None:  # the shard is closed and read to its end
            shard.closed = True
            for child in response.get("ChildShards", []):
                self._add(child["ShardId"], set(child.get("ParentShards", [])))
        return records


def iter_records(
    client: KinesisClient,
    stream_name: str,
    *,
    follow: bool = False,
    timeout: float | None = None,
    poll_interval: float = 0.25,
) -> Iterator[TailedRecord]:
    """Yield every record of the stream from TRIM_HORIZON.

    ``follow=False`` stops once every shard is read to its current end; ``follow=True`` keeps polling for new
    records until ``timeout`` seconds have passed (``None``: until the caller stops iterating).
    """
    reader = StreamReader(client, stream_name)
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        records = reader.poll()
        yield from records
        if not follow and reader.caught_up:
            return
        if not records:
            time.sleep(poll_interval)


def read_all(
    client: KinesisClient,
    stream_name: str,
    *,
    expect: int | None = None,
    timeout: float = 10.0,
    poll_interval: float = 0.1,
) -> list[TailedRecord]:
    """Poll the stream until ``expect`` records have arrived or ``timeout`` seconds passed; return what arrived.

    ``expect=None`` returns as soon as every shard is read to its current end. It never raises on a timeout:
    compare ``len(result)`` with what you expected.
    """
    reader = StreamReader(client, stream_name)
    deadline = time.monotonic() + timeout
    records: list[TailedRecord] = []
    while True:
        batch = reader.poll()
        records.extend(batch)
        done = len(records) >= expect if expect is not None else reader.caught_up
        if done or time.monotonic() >= deadline:
            return records
        if not batch:
            time.sleep(poll_interval)


def decode_dead_letter(event: dict[str, Any]) -> dict[str, Any]:
    """A dead-letter event with its ``payload_base64`` decoded into ``payload`` (JSON value or text) and
    ``payload_kind`` (``"json"``, ``"text"`` or ``"binary"``; binary payloads keep only the base64)."""
    raw = base64.b64decode(event.get("payload_base64", ""))
    decoded: Any = None
    try:
        decoded, kind = orjson.loads(raw), "json"
    except orjson.JSONDecodeError:
        try:
            decoded, kind = raw.decode("utf-8"), "text"
        except UnicodeDecodeError:
            kind = "binary"
    return {**event, "payload": decoded, "payload_kind": kind}


def record_json(record: TailedRecord, *, envelope: bool = True, decode_payloads: bool = False) -> bytes:
    """One JSON line (no newline) for a record.

    With ``envelope`` the event sits under ``"event"`` next to ``shard_id``, ``sequence_number``,
    ``partition_key`` and ``arrival``; without it, the bare event. A record that is not JSON is shown as
    ``{"data_base64", "error"}``. ``decode_payloads`` applies :func:`decode_dead_letter` to dead-letter events.
    """
    event = record.event
    if record.error is not None:
        event = {"data_base64": base64.b64encode(record.data).decode("ascii"), "error": record.error}
    elif decode_payloads and isinstance(event, dict) and "payload_base64" in event:
        event = decode_dead_letter(event)
    if not envelope:
        return orjson.dumps(event)
    return orjson.dumps(
        {
            "shard_id": record.shard_id,
            "sequence_number": record.sequence_number,
            "partition_key": record.partition_key,
            "arrival": record.arrival.isoformat() if record.arrival is not None else None,
            "event": event,
        }
    )


def print_records(
    client: KinesisClient,
    stream_name: str,
    *,
    out: TextIO | None = None,
    follow: bool = False,
    timeout: float | None = None,
    max_records: int | None = None,
    envelope: bool = True,
    decode_payloads: bool = False,
) -> int:
    """Print the stream's records from TRIM_HORIZON as JSON lines on ``out`` (default stdout); return how many.

    Stops at the current end of every shard, or with ``follow`` after ``timeout`` seconds (``None``: never),
    or after ``max_records``.
    """
    out = out or sys.stdout
    printed = 0
    if max_records == 0:
        return 0
    for record in iter_records(client, stream_name, follow=follow, timeout=timeout):
        out.write(record_json(record, envelope=envelope, decode_payloads=decode_payloads).decode("utf-8") + "\n")
        out.flush()
        printed += 1
        if max_records is not None and printed >= max_records:
            break
    return printed
