"""Replay TLC trip records into a Kinesis stream, as the producer this service replaces did.

Each ride becomes ``{"ride": {"PULocationID": int, "DOLocationID": int, "trip_distance": float}, "ride_id": int}``
with partition key ``str(ride_id)``. Ride ids are ``start_ride_id`` + the row's position after ``skip_rows``, so
a ride id always names the same row of the file, whichever rides the filters leave out.

:func:`replay` returns a :class:`ReplaySummary` holding the true duration of every ride sent, so a caller can
compare the consumer's predictions with it (:func:`rmse`). :func:`put_payloads` writes arbitrary bytes (poison
records for tests). Both resend only the entries PutRecords reports as failed, with capped exponential backoff
and full jitter, a bounded number of times.
"""

from __future__ import annotations

import math
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from consumer.pipeline.events import InvalidRide, decode_ride
from consumer.pipeline.sink import MAX_RECORDS_PER_PUT, Entry, KinesisSink, PutResult, chunked
from consumer.runtime.aws import KinesisClient

__all__ = [
    "ReplaySummary",
    "RideRow",
    "put_payloads",
    "read_rides",
    "replay",
    "ride_payload",
    "rmse",
]


# ----------------------------------------------------------------------------------------------------- putting
def put_payloads(
    client: KinesisClient,
    stream_name: str,
    payloads: Sequence[tuple[bytes, str]],
    *,
    max_attempts: int = 8,
) -> list[PutResult]:
    """Write arbitrary ``(data, partition_key)`` pairs, in as few PutRecords calls as the limits allow, resending
    only failed entries (the consumer's own :class:`~consumer.pipeline.sink.KinesisSink`).

    For tests that inject records the replayer would never build (not UTF-8, not JSON, huge). Returns where each
    one was written, in the order given; raises :class:`~consumer.errors.SinkError` when entries are still refused
    after ``max_attempts`` calls.
    """
    sink = KinesisSink(
        client, stream_name, max_attempts=max_attempts, backoff_first_seconds=0.05, backoff_max_seconds=2
    )
    return sink.put([Entry(data, key) for data, key in payloads])


# ------------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True, slots=True)
class RideRow:
    """One row of a TLC file, as the replayer sends it, with its true duration (``None`` if unknown)."""

    ride_id: int
    pu_location_id: int | None
    do_location_id: int | None
    trip_distance: float | None
    duration_minutes: float | None


def _timestamp_columns(schema: pa.Schema) -> tuple[str, str]:
    names = schema.names
    pickup = next((n for n in names if n.lower().endswith("pickup_datetime")), None)
    dropoff = next((n for n in names if n.lower().endswith("dropoff_datetime")), None)
    if pickup is None or dropoff is None:
        raise ValueError(f"no pickup/dropoff datetime columns in {names}")
    return pickup, dropoff


def _minutes(pickup: pa.Array, dropoff: pa.Array) -> list[float | None]:
    micros = pc.cast(pc.subtract(pc.cast(dropoff, pa.timestamp("us")), pc.cast(pickup, pa.timestamp("us"))), pa.int64())
    return [None if m is None else m / 60_000_000 for m in micros.to_pylist()]


def _open_parquet(source: Path | str) -> pq.ParquetFile:
    """A local path, or an http(s) URL read into memory (TLC monthly files are tens of MB)."""
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=60) as response:  # a URL the operator gave
            return pq.ParquetFile(pa.BufferReader(response.read()))
    return pq.ParquetFile(source)


def read_rides(
    parquet: Path | str, *, start_ride_id: int = 1, skip_rows: int = 0, batch_size: int = 10_000
) -> Iterator[RideRow]:
    """Stream the rides of a TLC parquet file or URL (yellow ``tpep_*``, green ``lpep_*``), from row ``skip_rows``.

    The ride id of row ``skip_rows + n`` is ``start_ride_id + n``.
    """
    file = _open_parquet(parquet)
    pickup, dropoff = _timestamp_columns(file.schema_arrow)
    columns = ["PULocationID", "DOLocationID", "trip_distance", pickup, dropoff]
    row = 0
    for batch in file.iter_batches(batch_size=batch_size, columns=columns):
        if row + batch.num_rows <= skip_rows:
            row += batch.num_rows
            continue
        durations = _minutes(batch.column(pickup), batch.column(dropoff))
        pu, do, distance = (batch.column(name).to_pylist() for name in columns[:3])
        for i in range(batch.num_rows):
            if row >= skip_rows:
                yield RideRow(
                    ride_id=start_ride_id + row - skip_rows,
                    pu_location_id=None if pu[i] is None else int(pu[i]),
                    do_location_id=None if do[i] is None else int(do[i]),
                    trip_distance=None if distance[i] is None else float(distance[i]),
                    duration_minutes=durations[i],
                )
            row += 1


def ride_payload(ride: RideRow) -> bytes:
    """The event the producer sent for a ride. Missing values stay ``null``: the consumer dead-letters them."""
    return orjson.dumps(
        {
            "ride": {
                "PULocationID": ride.pu_location_id,
                "DOLocationID": ride.do_location_id,
                "trip_distance": ride.trip_distance,
            },
            "ride_id": ride.ride_id,
        }
    )


# ------------------------------------------------------------------------------------------------------ replay
@dataclass
class ReplaySummary:
    """What a replay wrote. ``ground_truth`` maps each ride id sent to its true duration in minutes (rides whose
    duration is unknown are sent but left out of it)."""

    records_sent: int = 0
    skipped_invalid: int = 0
    skipped_duration: int = 0
    resent_entries: int = 0
    put_requests: int = 0
    seconds: float = 0.0
    per_shard: dict[str, int] = field(default_factory=dict)
    ground_truth: dict[int, float] = field(default_factory=dict)

    @property
    def records_per_second(self) -> float:
        return self.records_sent / self.seconds if self.seconds > 0 else 0.0


class _Progress:
    """At most one line a second on stderr (carriage return on a terminal)."""

    def __init__(self, stream: TextIO | None, limit: int | None) -> None:
        self.stream = stream
        self.limit = limit
        self.began = time.monotonic()
        self.last = 0.0
        self.shown = -1

    def update(self, sent: int, *, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        terminal = self.stream.isatty()
        if final and sent == self.shown and not terminal:
            return  # the last line already says it (on a terminal, the final one ends the line)
        if not final and (sent == self.shown or now - self.last < 1.0):
            return
        self.last, self.shown = now, sent
        elapsed = now - self.began
        of = f"/{self.limit:,}" if self.limit is not None else ""
        rate = sent / elapsed if elapsed > 0 else 0.0
        line = f"replay: {sent:,}{of} records, {elapsed:.1f} s, {rate:,.0f}/s"
        end = "\n" if final or not terminal else ""
        self.stream.write(("\r" if terminal else "") + line + end)
        self.stream.flush()


def _selected(
    rides: Iterator[RideRow], summary: ReplaySummary, *, skip_invalid: bool, duration_range: tuple[float, float] | None
) -> Iterator[tuple[RideRow, bytes]]:
    for ride in rides:
        if duration_range is not None:
            low, high = duration_range
            if ride.duration_minutes is None or not low <= ride.duration_minutes <= high:
                summary.skipped_duration += 1
                continue
        payload = ride_payload(ride)
        if skip_invalid:
            try:
                decode_ride(payload)
            except InvalidRide:
                summary.skipped_invalid += 1
                continue
        yield ride, payload


def replay(
    parquet: Path | str,
    *,
    client: KinesisClient,
    stream_name: str,
    limit: int | None = None,
    rate_per_second: float | None = None,
    start_ride_id: int = 1,
    skip_rows: int = 0,
    skip_invalid: bool = False,
    duration_range: tuple[float, float] | None = None,
    progress: bool = True,
    progress_stream: TextIO | None = None,
    max_attempts: int = 8,
) -> ReplaySummary:
    """Send the rides of ``parquet`` to ``stream_name``; return what was sent and the true durations.

    :param limit: send at most this many records (after the filters); ``None`` sends the whole file.
    :param rate_per_second: pace to this many records a second (in requests of about a tenth of a second's
        worth); ``None`` sends as fast as PutRecords takes them.
    :param start_ride_id, skip_rows: the ride id of row ``skip_rows`` (the first row read) is ``start_ride_id``.
    :param skip_invalid: leave out rides the consumer would dead-letter (``consumer.pipeline.events.decode_ride``).
    :param duration_range: only rides whose true duration in minutes is within ``[low, high]``, e.g. ``(1, 60)``
        as the model was trained on, for a meaningful RMSE.
    :param progress: a line a second on ``progress_stream`` (default: stderr).
    :raises SinkError: some records were still refused after ``max_attempts`` calls; the summary of what
        was written before is lost with it, the records written stay in the stream.
    """
    if rate_per_second is not None and rate_per_second <= 0:
        raise ValueError(f"rate_per_second must be positive, got {rate_per_second}")
    summary = ReplaySummary()
    shown = _Progress((progress_stream or sys.stderr) if progress else None, limit)
    per_request = MAX_RECORDS_PER_PUT
    if rate_per_second is not None:
        per_request = max(1, min(MAX_RECORDS_PER_PUT, math.ceil(rate_per_second / 10)))
    rides = _selected(
        read_rides(parquet, start_ride_id=start_ride_id, skip_rows=skip_rows),
        summary,
        skip_invalid=skip_invalid,
        duration_range=duration_range,
    )
    per_shard: Counter[str] = Counter()
    resent: list[int] = []
    sink = KinesisSink(
        client,
        stream_name,
        max_attempts=max_attempts,
        backoff_first_seconds=0.05,
        backoff_max_seconds=2,
        on_retry=resent.append,
    )
    began = time.monotonic()
    batch: list[tuple[RideRow, bytes]] = []

    def send() -> None:
        if rate_per_second is not None:  # wait until the records sent so far are due
            due = began + summary.records_sent / rate_per_second
            time.sleep(max(0.0, due - time.monotonic()))
        entries = [Entry(payload, str(ride.ride_id)) for ride, payload in batch]
        summary.put_requests += len(list(chunked(entries)))
        per_shard.update(result.shard_id for result in sink.put(entries))
        for ride, _ in batch:
            if ride.duration_minutes is not None:
                summary.ground_truth[ride.ride_id] = ride.duration_minutes
        summary.records_sent += len(batch)
        batch.clear()
        shown.update(summary.records_sent)

    for ride, payload in rides if limit != 0 else ():
        batch.append((ride, payload))
        reached = limit is not None and summary.records_sent + len(batch) >= limit
        if len(batch) == per_request or reached:
            send()
        if reached:
            break  # before the generator reads (and counts) rides that will not be sent
    if batch:
        send()
    summary.resent_entries = sum(resent)
    summary.seconds = time.monotonic() - began
    summary.per_shard = dict(sorted(per_shard.items()))
    shown.update(summary.records_sent, final=True)
    return summary


def rmse(ground_truth: Mapping[int, float], predictions: Mapping[int | str, float]) -> tuple[float, int]:
    """Root mean squared error over the rides present in both, and how many that is (``nan`` if none).

    Prediction keys may be ints or their string form (the consumer echoes ``ride_id`` as the producer sent it).
    """
    errors = []
    for ride_id, predicted in predictions.items():
        key = int(ride_id) if isinstance(ride_id, str) and ride_id.lstrip("-").isdigit() else ride_id
        truth = ground_truth.get(key) if isinstance(key, int) else None
        if truth is not None:
            errors.append((predicted - truth) ** 2)
    if not errors:
        return math.nan, 0
    return math.sqrt(sum(errors) / len(errors)), len(errors)
