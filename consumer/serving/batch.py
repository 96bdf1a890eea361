"""``python -m consumer score``: batch scoring of a TLC month file, as the course's batch deployment did, on the
stream's model, fast path and validation.

The input is read in record batches (pyarrow, row group by row group; never the whole month at once) and each
batch is scored with one predict call (:func:`consumer.serving.scoring.score_rows`). The output has one row per
input row, in order:

- ``ride_id``: ``f"{year:04d}/{month:02d}_{index}"``, the row's index in the file, as the course built it;
- ``predicted_duration`` (minutes; null when the row was not scored) and ``model_version``;
- the features as the file has them (``PULocationID``, ``DOLocationID``, ``trip_distance``);
- ``actual_duration`` (minutes), when the file has pickup and drop-off times;
- ``reason`` and ``detail``: why a row was not scored (null when it was), with the stream's dead-letter reasons.

The month comes from ``--year``/``--month``, else from a TLC file name (``green_tripdata_2022-01.parquet``), else
from the pickup times (the month most pickups fall in, read in a first pass over that one column).
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from consumer.errors import ConsumerError
from consumer.model.scorer import AnyScorer, load_prepared
from consumer.runtime.logs import get_logger
from consumer.runtime.preparation import prepare_model
from consumer.runtime.settings import ServingSettings
from consumer.serving.files import Location, S3Options, locate, publish, staging_file
from consumer.serving.scoring import Rejection, score_rows

__all__ = ["FEATURE_COLUMNS", "ScoreSummary", "ride_month", "score_file", "score_month"]

#: The model's input columns, as the TLC files and the stream's rides name them.
FEATURE_COLUMNS = ("PULocationID", "DOLocationID", "trip_distance")
#: Pickup and drop-off times: lpep_ (green), tpep_ (yellow), none (FHV, high-volume FHV).
_PICKUP = re.compile(r"^(?:[a-z]pep_)?pickup_datetime$", re.IGNORECASE)
_DROPOFF = re.compile(r"^(?:[a-z]pep_)?dropoff_datetime$", re.IGNORECASE)
#: A TLC file name: ``<kind>_tripdata_<year>-<month>.parquet``.
_TLC_NAME = re.compile(r"(?P<year>\d{4})-(?P<month>\d{2})\.parquet$")
#: Rows per record batch: big enough for one predict call to cost little per row, small enough for memory.
DEFAULT_BATCH_ROWS = 50_000
#: Seconds between two progress lines.
PROGRESS_EVERY_SECONDS = 2.0


@dataclass
class ScoreSummary:
    """What one run did; ``rejected`` counts the rows not scored, by reason."""

    source: str
    destination: str
    model_version: str
    year: int
    month: int
    rows: int = 0
    scored: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        """What the command prints: the counts, where the output went, the rows not scored by reason."""
        rejected = sum(self.rejected.values())
        reasons = f" by reason {dict(sorted(self.rejected.items()))} (columns reason and detail)" if rejected else ""
        return (
            f"scored {self.scored:,} of {self.rows:,} rows into {self.destination} (ride ids "
            f"{self.year:04d}/{self.month:02d}_N, model version {self.model_version}) in {self.seconds:.1f} s, "
            f"{self.rows_per_second:,.0f} rows/s\nnot scored: {rejected:,}{reasons}"
        )

    def as_json(self) -> str:
        return orjson.dumps({**dataclasses.asdict(self), "rows_per_second": self.rows_per_second}).decode()


#: What the command hears about progress: the rows done so far, the rows in the file, the summary so far.
Progress = Callable[[int, int, ScoreSummary], None]


def ride_month(location: Location, parquet: pq.ParquetFile, year: int | None, month: int | None) -> tuple[int, int]:
    """The month of the ride ids: given, else from the TLC file name, else the month most pickups fall in."""
    if year is not None and month is not None:
        return year, month
    named = _TLC_NAME.search(location.name)
    if named and 1 <= int(named["month"]) <= 12:
        return int(named["year"]), int(named["month"])
    pickup, _ = _time_columns(parquet.schema_arrow)
    if pickup is None:
        raise ConsumerError(
            f"{location.uri}: cannot tell the month of the rides (no TLC file name, no pickup times): "
            "pass --year and --month"
        )
    counts: collections.Counter[int] = collections.Counter()
    for batch in parquet.iter_batches(batch_size=DEFAULT_BATCH_ROWS, columns=[pickup]):
        times = batch.column(0)
        months = pc.add(pc.multiply(pc.year(times), 100), pc.month(times))
        for entry in pc.value_counts(months).to_pylist():
            if entry["values"] is not None:
                counts[entry["values"]] += entry["counts"]
    if not counts:
        raise ConsumerError(f"{location.uri}: no pickup times to tell the month from: pass --year and --month")
    most, _ = counts.most_common(1)[0]
    return most // 100, most % 100


def _time_columns(schema: pa.Schema) -> tuple[str | None, str | None]:
    """The pickup and drop-off time columns, when the file has them as timestamps."""

    def find(pattern: re.Pattern[str]) -> str | None:
        for column in schema:
            if pattern.match(column.name) and pa.types.is_timestamp(column.type):
                return str(column.name)
        return None

    return find(_PICKUP), find(_DROPOFF)


def _output_schema(input_schema: pa.Schema, with_actual: bool) -> pa.Schema:
    fields = [
        pa.field("ride_id", pa.string(), nullable=False),
        pa.field("predicted_duration", pa.float64()),
        pa.field("model_version", pa.string(), nullable=False),
        *(input_schema.field(name) for name in FEATURE_COLUMNS),
    ]
    if with_actual:
        fields.append(pa.field("actual_duration", pa.float64()))
    fields += [pa.field("reason", pa.string()), pa.field("detail", pa.string())]
    return pa.schema(fields)


def _actual_minutes(pickup: pa.Array, dropoff: pa.Array) -> pa.Array:
    microseconds = pc.cast(pc.cast(pc.subtract(dropoff, pickup), pa.duration("us")), pa.int64())
    return pc.divide(pc.cast(microseconds, pa.float64()), 60_000_000.0)


def _score_batch(
    batch: pa.RecordBatch,
    first_index: int,
    prefix: str,
    model: AnyScorer,
    schema: pa.Schema,
    times: tuple[str | None, str | None],
    summary: ScoreSummary,
) -> pa.RecordBatch:
    rows: list[dict[str, Any]] = batch.select(list(FEATURE_COLUMNS)).to_pylist()
    ride_ids = [f"{prefix}{index}" for index in range(first_index, first_index + batch.num_rows)]
    outcomes = score_rows(model, rows, ride_ids)
    predicted: list[float | None] = []
    reasons: list[str | None] = []
    details: list[str | None] = []
    for outcome in outcomes:
        if isinstance(outcome, Rejection):
            predicted.append(None)
            reasons.append(outcome.reason)
            details.append(outcome.detail)
            summary.rejected[outcome.reason] = summary.rejected.get(outcome.reason, 0) + 1
        else:
            predicted.append(outcome)
            reasons.append(None)
            details.append(None)
    summary.scored += sum(reason is None for reason in reasons)
    columns: list[pa.Array] = [
        pa.array(ride_ids, pa.string()),
        pa.array(predicted, pa.float64()),
        pa.array([model.info.version] * batch.num_rows, pa.string()),
        *(batch.column(name) for name in FEATURE_COLUMNS),
    ]
    pickup, dropoff = times
    if pickup is not None and dropoff is not None:
        columns.append(_actual_minutes(batch.column(pickup), batch.column(dropoff)))
    columns += [pa.array(reasons, pa.string()), pa.array(details, pa.string())]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def score_file(
    source: Location,
    destination: Location,
    model: AnyScorer,
    *,
    year: int | None = None,
    month: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Progress | None = None,
) -> ScoreSummary:
    """Score every row of the parquet file at ``source`` and publish the predictions at ``destination`` (whole,
    or nothing if the run fails). Raise :class:`ConsumerError` when the input cannot be read or lacks a feature
    column."""
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        raw = source.filesystem.open_input_file(source.path)
    except (OSError, pa.ArrowException) as exc:
        raise ConsumerError(f"{source.uri}: cannot read it: {exc}") from exc
    with raw:
        try:
            parquet = pq.ParquetFile(raw)
        except (OSError, pa.ArrowException) as exc:
            raise ConsumerError(f"{source.uri}: not a parquet file: {exc}") from exc
        input_schema = parquet.schema_arrow
        missing = [name for name in FEATURE_COLUMNS if name not in input_schema.names]
        if missing:
            raise ConsumerError(f"{source.uri}: no column {', '.join(missing)}; is it a TLC trip file?")
        ride_year, ride_month_number = ride_month(source, parquet, year, month)
        summary = ScoreSummary(source.uri, destination.uri, model.info.version, ride_year, ride_month_number)
        times = _time_columns(input_schema)
        with_actual = times[0] is not None and times[1] is not None
        schema = _output_schema(input_schema, with_actual)
        columns = [*FEATURE_COLUMNS, *(name for name in times if name is not None and with_actual)]
        prefix = f"{ride_year:04d}/{ride_month_number:02d}_"
        total = parquet.metadata.num_rows
        last_progress = time.monotonic()
        with staging_file(destination) as staged:
            with pq.ParquetWriter(staged, schema) as writer:
                for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
                    writer.write_batch(_score_batch(batch, summary.rows, prefix, model, schema, times, summary))
                    summary.rows += batch.num_rows
                    if progress is not None and time.monotonic() - last_progress >= PROGRESS_EVERY_SECONDS:
                        summary.seconds = time.perf_counter() - started
                        progress(summary.rows, total, summary)
                        last_progress = time.monotonic()
            publish(staged, destination)
    summary.seconds = time.perf_counter() - started
    summary.cpu_seconds = time.process_time() - cpu_started
    return summary


def score_month(
    settings: ServingSettings,
    source: str,
    destination: str,
    *,
    year: int | None = None,
    month: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> ScoreSummary:
    """The command: resolve both locations, prepare MODEL_URI, score the file, logging progress on stderr."""
    s3 = S3Options(settings.aws_region, str(settings.aws_endpoint_url_s3) if settings.aws_endpoint_url_s3 else None)
    source_location, destination_location = locate(source, s3), locate(destination, s3)
    model = load_prepared(prepare_model(settings).path)
    log = get_logger()

    def progress(done: int, total: int, summary: ScoreSummary) -> None:
        log.info(
            "score_progress",
            rows=done,
            of=total,
            percent=round(100 * done / total, 1) if total else 100.0,
            rejected=sum(summary.rejected.values()),
            rows_per_second=round(summary.rows_per_second),
        )

    return score_file(
        source_location, destination_location, model, year=year, month=month, batch_rows=batch_rows, progress=progress
    )
