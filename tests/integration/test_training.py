"""training.train against a temporary MLflow store, on a sample of the real January 2022 trips."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from consumer.model.features import Ride, features
from consumer.tools.training import feature_rows, read_trips, split_last_week
from tests.integration.conftest import N_ESTIMATORS, SAMPLE
from tests.support.models import TRIPS

pytestmark = pytest.mark.usefixtures("mlflow_isolation", "trips_file")


def _client(trained):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=trained.store.tracking_uri, registry_uri=trained.store.tracking_uri)


def test_training_registers_a_version_and_points_the_alias_at_it(trained):
    result = trained.result
    version = _client(trained).get_model_version_by_alias(result.name, "production")

    assert (version.version, version.run_id) == (int(result.version), result.run_id)
    assert result.model_uri == f"models:/{result.name}/{result.version}"
    assert result.rows_train + result.rows_val == SAMPLE
    assert result.validation_from == "2022-01-25T00:00:00"


def test_run_records_the_validation_rmse_and_the_forest_parameters(trained):
    run = _client(trained).get_run(trained.result.run_id)

    assert math.isclose(run.data.metrics["rmse"], trained.result.rmse)
    assert 4 < trained.result.rmse < 12  # a small sample and 10 trees: worse than the full model's ~6.3
    assert run.data.params["n_estimators"] == str(N_ESTIMATORS)
    assert run.data.params["max_depth"] == "20"
    assert run.data.params["min_samples_leaf"] == "10"
    assert run.data.params["serialization_format"] == trained.result.serialization_format


def test_logged_model_uses_the_requested_format_and_keeps_an_input_example(trained):
    mlmodel = yaml.safe_load((trained.model_dir / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["sklearn"]

    assert flavor["serialization_format"] == trained.result.serialization_format
    assert mlmodel["run_id"] == trained.result.run_id
    assert (trained.model_dir / "input_example.json").is_file()
    if trained.result.serialization_format == "skops":
        assert flavor["skops_trusted_types"] == ["sklearn.tree._tree.Tree"]


def test_logged_pipeline_scores_single_threaded(trained):
    import mlflow.sklearn

    pipeline = mlflow.sklearn.load_model(str(trained.model_dir))

    assert pipeline.steps[-1][1].n_jobs == 1


def test_trips_keep_durations_between_one_and_sixty_minutes():
    trips = read_trips(str(TRIPS))

    assert trips["duration"].between(1, 60).all()
    assert 55_000 < len(trips) < 62_495


def test_last_week_of_the_month_is_held_out_from_the_25th():
    pickups = pd.to_datetime(
        ["2009-01-01 00:34:00", "2022-01-24 23:59:59", "2022-01-25 00:00:00", "2022-01-31 23:00:00"]
    )
    trips = pd.DataFrame({"lpep_pickup_datetime": pickups.append(pd.DatetimeIndex(["2022-01-10"] * 3))})

    train, validation, cut = split_last_week(trips)

    assert cut == pd.Timestamp("2022-01-25")
    assert list(validation["lpep_pickup_datetime"].dt.day) == [25, 31]
    assert len(train) == 5


def test_last_week_of_february_starts_on_the_22nd():
    trips = pd.DataFrame({"lpep_pickup_datetime": pd.to_datetime(["2022-02-01", "2022-02-21", "2022-02-22"])})

    _, validation, cut = split_last_week(trips)

    assert cut == pd.Timestamp("2022-02-22")
    assert len(validation) == 1


def test_training_rows_are_the_scoring_features_of_each_trip():
    trips = read_trips(str(TRIPS)).head(500)

    rows = feature_rows(trips)

    expected = [
        features(Ride(ride_id=0, pu_location_id=int(pu), do_location_id=int(do), trip_distance=float(miles)))
        for pu, do, miles in zip(trips.PULocationID, trips.DOLocationID, trips.trip_distance, strict=True)
    ]
    assert rows == expected
    assert all(type(row["PU_DO"]) is str and type(row["trip_distance"]) is float for row in rows)


def test_unknown_serialization_format_is_rejected_before_training():
    from consumer.tools.training import train

    with pytest.raises(ValueError, match="serialization_format"):
        train(str(TRIPS), tracking_uri="sqlite:///unused.db", serialization_format="pickle")


def test_training_shows_a_newcomer_no_warning_or_error(tmp_path, decoy_tracking_uri):
    """`make demo` trains first: MLflow's own check of the logged model (its serving input example) passes, and
    nothing at warning level or above is logged or warned (Python's default filters hide deprecation warnings)."""
    import logging
    import warnings

    import mlflow  # noqa: F401 - mlflow configures its loggers when imported: attach to them after that

    from consumer.tools.training import local_store, train

    class Records(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    handler = Records()
    loggers = [logging.getLogger(), logging.getLogger("mlflow")]  # mlflow's own logger does not propagate
    for logger in loggers:
        logger.addHandler(handler)
    tracking_uri, artifacts = local_store(tmp_path / "store")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            train(str(TRIPS), tracking_uri=tracking_uri, artifact_location=artifacts, sample=2_000, n_estimators=3)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)

    assert [record.getMessage()[:300] for record in handler.records] == []
    shown = [w for w in caught if not issubclass(w.category, DeprecationWarning | PendingDeprecationWarning)]
    assert [f"{w.category.__name__}: {w.message}" for w in shown] == []
