"""The batch command (``python -m consumer score``): one output row per input row with the course's ride id, rows
that cannot be scored kept in place with their reason, the month of the ride ids, local and S3 (moto's server)
paths, and an output published whole or not at all. On the model of a real MLflow store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from consumer.errors import ConsumerError
from consumer.model.scorer import load_prepared
from consumer.serving.batch import score_file
from consumer.serving.files import S3Options, locate
from consumer.tools.paths import REPO_ROOT
from tests.integration.serving.conftest import ROWS, write_rides

LOCAL = S3Options()


def score(source: Path, destination: Path, served_model, **options):
    model = load_prepared(served_model.prepared)
    return score_file(locate(str(source), LOCAL), locate(str(destination), LOCAL), model, **options)


def run_score(served_model, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "score", *args],
        cwd=REPO_ROOT,
        env=env or served_model.env,
        capture_output=True,
        text=True,
    )


def test_every_input_row_gets_one_output_row_in_order_with_the_courses_ride_id(served_model, month_file, tmp_path):
    output = tmp_path / "out.parquet"

    summary = score(month_file, output, served_model, batch_rows=64)  # several record batches

    table = pq.read_table(output)
    source = pq.read_table(month_file)
    assert table.num_rows == source.num_rows == ROWS == summary.rows
    assert table.column("ride_id").to_pylist() == [f"2022/01_{index}" for index in range(ROWS)]
    for name in ("PULocationID", "DOLocationID", "trip_distance"):
        assert table.column(name) == source.column(name)
    assert table.column_names == [
        "ride_id",
        "predicted_duration",
        "model_version",
        "PULocationID",
        "DOLocationID",
        "trip_distance",
        "actual_duration",
        "reason",
        "detail",
    ]
    assert set(table.column("model_version").to_pylist()) == {"1"}
    assert summary.scored + sum(summary.rejected.values()) == ROWS
    expected = [
        (dropoff - pickup).total_seconds() / 60
        for pickup, dropoff in zip(
            source.column("lpep_pickup_datetime").to_pylist(),
            source.column("lpep_dropoff_datetime").to_pylist(),
            strict=True,
        )
    ]
    assert table.column("actual_duration").to_pylist() == pytest.approx(expected)


def test_rows_that_cannot_be_scored_keep_their_place_with_the_stream_reason(served_model, tmp_path):
    source = write_rides(
        tmp_path / "green_tripdata_2023-05.parquet",
        {
            "PULocationID": pa.array([130, None, 130, 1], pa.int64()),
            "DOLocationID": pa.array([205, 205, 205, 2], pa.int64()),
            "trip_distance": pa.array([3.66, 3.66, float("nan"), None], pa.float64()),
        },
    )
    output = tmp_path / "out.parquet"

    summary = score(source, output, served_model)

    rows = pq.read_table(output).to_pylist()
    assert [row["ride_id"] for row in rows] == ["2023/05_0", "2023/05_1", "2023/05_2", "2023/05_3"]
    assert [row["reason"] for row in rows] == [None, "missing_field", "not_finite", "missing_field"]
    assert rows[0]["predicted_duration"] > 0 and rows[0]["detail"] is None
    assert [row["predicted_duration"] for row in rows[1:]] == [None, None, None]
    assert rows[1]["detail"] == "ride.PULocationID is missing"
    assert "actual_duration" not in rows[0]  # no pickup and drop-off times in this file
    assert (summary.scored, summary.rejected) == (1, {"missing_field": 2, "not_finite": 1})


def test_the_month_comes_from_the_options_then_the_tlc_name_then_the_pickups(served_model, month_file, tmp_path):
    renamed = tmp_path / "some-rides.parquet"
    renamed.write_bytes(month_file.read_bytes())

    given = score(month_file, tmp_path / "a.parquet", served_model, year=2031, month=7)
    named = score(month_file, tmp_path / "b.parquet", served_model)
    from_pickups = score(renamed, tmp_path / "c.parquet", served_model)

    assert (given.year, given.month) == (2031, 7)
    assert pq.read_table(tmp_path / "a.parquet").column("ride_id")[0].as_py() == "2031/07_0"
    assert (named.year, named.month) == (2022, 1)
    assert (from_pickups.year, from_pickups.month) == (2022, 1)


def test_without_a_tlc_name_or_pickup_times_the_month_must_be_given(served_model, tmp_path):
    source = write_rides(
        tmp_path / "rides.parquet",
        {"PULocationID": [130], "DOLocationID": [205], "trip_distance": [3.66]},
    )

    with pytest.raises(ConsumerError, match="--year and --month"):
        score(source, tmp_path / "out.parquet", served_model)
    assert not list(tmp_path.glob("*out*"))


def test_a_file_without_a_feature_column_is_refused_and_nothing_is_written(served_model, tmp_path):
    source = write_rides(tmp_path / "green_tripdata_2022-01.parquet", {"PULocationID": [1], "DOLocationID": [2]})

    with pytest.raises(ConsumerError, match="no column trip_distance"):
        score(source, tmp_path / "out.parquet", served_model)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["green_tripdata_2022-01.parquet"]


def test_the_command_prints_the_counts_and_exits_0(served_model, tmp_path):
    source = write_rides(
        tmp_path / "yellow_tripdata_2024-02.parquet",
        {
            "PULocationID": pa.array([130, 130, 7], pa.int64()),
            "DOLocationID": pa.array([205, 205, 8], pa.int64()),
            "trip_distance": pa.array([3.66, None, 1.0]),
        },
    )
    output = tmp_path / "predictions" / "2024-02.parquet"

    done = run_score(served_model, "--input", str(source), "--output", str(output))

    assert done.returncode == 0, done.stderr[-3000:]
    assert f"scored 2 of 3 rows into {output}" in done.stdout
    assert "not scored: 1 by reason {'missing_field': 1}" in done.stdout
    assert pq.read_table(output).num_rows == 3


def test_year_without_month_is_a_usage_error(served_model, month_file, tmp_path):
    done = run_score(
        served_model, "--input", str(month_file), "--output", str(tmp_path / "o.parquet"), "--year", "2022"
    )

    assert done.returncode == 2
    assert "--year and --month together" in done.stderr


def test_s3_input_and_output_through_the_s3_api(served_model, month_file, s3, moto_endpoint, tmp_path):
    """The same file scored from S3 into S3 (moto's server) gives the same table as on a local disk; the month
    comes from the object's name."""
    s3.create_bucket(Bucket="tlc")
    s3.create_bucket(Bucket="scored")
    s3.upload_file(str(month_file), "tlc", f"trips/{month_file.name}")
    env = {
        **served_model.env,
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }

    done = run_score(
        served_model, "--input", f"s3://tlc/trips/{month_file.name}", "--output", "s3://scored/2022/01.parquet", env=env
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert f"of {ROWS} rows into s3://scored/2022/01.parquet" in done.stdout
    s3.download_file("scored", "2022/01.parquet", str(tmp_path / "from-s3.parquet"))
    score(month_file, tmp_path / "local.parquet", served_model)
    assert pq.read_table(tmp_path / "from-s3.parquet") == pq.read_table(tmp_path / "local.parquet")


def test_a_missing_s3_input_fails_naming_it_and_writes_nothing(served_model, s3, moto_endpoint):
    s3.create_bucket(Bucket="empty-input")
    s3.create_bucket(Bucket="untouched")
    env = {
        **served_model.env,
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }

    done = run_score(
        served_model, "--input", "s3://empty-input/nothing.parquet", "--output", "s3://untouched/out.parquet", env=env
    )

    assert done.returncode == 2
    assert "s3://empty-input/nothing.parquet: cannot read it" in done.stderr
    assert s3.list_objects_v2(Bucket="untouched").get("KeyCount") == 0
