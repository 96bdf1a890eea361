"""Models for the tests, all built one way: the service's DictVectorizer pipeline fitted on real January 2022 trips.

- :data:`TRIPS`, :func:`trips_file` and the ``trips_file`` fixture: the TLC parquet beside the repository
  (unavailable when it is not there: :mod:`tests.support.requirements`; the tests never download it).
- :func:`training_rows`: feature rows and durations, made the way training makes them.
- :func:`model_pipeline`: ``DictVectorizer`` followed by the given steps, or by the service's own forest.
- :func:`write_prepared`: a prepared-model directory (``pipeline.joblib`` + ``model.json``), as shards load it.
- :func:`save_mlflow_model`: an MLflow model directory (``MODEL_URI`` accepts a directory).
- :class:`ModelStore` and :func:`train_and_register`: a local MLflow store with the model trained and registered
  by :func:`consumer.tools.training.train` (what ``make demo`` does), for the tiers that start the launcher.

scikit-learn, joblib and mlflow are imported inside the functions: the unit tier does not pay for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from consumer.model.prepared import METADATA_FILE, PIPELINE_FILE, ModelInfo
from consumer.tools.paths import REPO_ROOT
from tests.support.requirements import require_file

if TYPE_CHECKING:
    import numpy as np

    from consumer.tools.training import TrainResult

__all__ = [
    "TINY",
    "TRIPS",
    "ModelStore",
    "RegisteredModel",
    "model_pipeline",
    "save_mlflow_model",
    "train_and_register",
    "training_rows",
    "trips_file",
    "write_prepared",
]

#: The January 2022 green-taxi trips, where the project's machines keep them.
TRIPS = REPO_ROOT.parent / "shared" / "data" / "green_tripdata_2022-01.parquet"
#: The provenance written into a prepared directory by :func:`write_prepared` unless told otherwise.
TINY = ModelInfo(uri="test://tiny", name="tiny", version="42", run_id=None)


def trips_file() -> Path:
    """:data:`TRIPS`, or the test is unavailable (skipped; a failure under CI=true)."""
    return require_file(TRIPS, "the January 2022 TLC green-taxi parquet is kept in ../shared/data beside the repo")


@pytest.fixture(name="trips_file", scope="session")
def trips_file_fixture() -> Path:
    return trips_file()


def training_rows(
    *, sample: int | None = None, head: int | None = None, max_miles: float | None = None
) -> tuple[list[dict[str, str | float]], np.ndarray]:
    """Feature rows and their durations (minutes) from :data:`TRIPS`, read and featurized as training does:
    the first ``head`` trips or ``sample`` of them drawn with seed 0, trips of ``max_miles`` or more left out."""
    from consumer.tools.training import feature_rows, read_trips

    trips = read_trips(str(trips_file()))
    if head is not None:
        trips = trips.head(head)
    if sample is not None:
        trips = trips.sample(sample, random_state=0)
    if max_miles is not None:
        trips = trips[trips["trip_distance"] < max_miles]
    return feature_rows(trips), trips["duration"].to_numpy()


def model_pipeline(*steps: Any, n_estimators: int = 10) -> Any:
    """An unfitted ``DictVectorizer`` pipeline: followed by ``steps``, or without them by the service's random
    forest (:func:`consumer.tools.training.make_pipeline`) with ``n_estimators`` trees on one core."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline

    from consumer.tools.training import make_pipeline as service_pipeline

    if not steps:
        return service_pipeline(n_estimators=n_estimators, n_jobs=1)
    return make_pipeline(DictVectorizer(), *steps)


def write_prepared(directory: Path, fitted: Any, info: ModelInfo = TINY) -> Path:
    """``directory`` as the launcher prepares a model, without the fast path: ``pipeline.joblib`` and
    ``model.json`` (compile it with :func:`consumer.model.compile.compile_into`)."""
    import joblib
    import sklearn

    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(fitted, directory / PIPELINE_FILE)
    metadata = {
        "uri": info.uri,
        "name": info.name,
        "version": info.version,
        "run_id": info.run_id,
        "sklearn_version": sklearn.__version__,
    }
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    return directory


def save_mlflow_model(fitted: Any, directory: Path, *, trusted_types: tuple[str, ...] = ()) -> str:
    """``fitted`` saved as an MLflow model directory in skops format, trusting the service's types plus
    ``trusted_types``; returns the directory as a MODEL_URI."""
    import mlflow.sklearn

    from consumer.tools.training import SKOPS_TRUSTED_TYPES

    mlflow.sklearn.save_model(
        fitted,
        directory,
        serialization_format="skops",
        skops_trusted_types=[*SKOPS_TRUSTED_TYPES, *trusted_types],
    )
    return str(directory)


@dataclass(frozen=True)
class ModelStore:
    """A local MLflow tracking store and registry (sqlite + an artifact folder) under ``directory``."""

    directory: Path
    tracking_uri: str
    artifact_location: str

    @classmethod
    def at(cls, directory: Path) -> ModelStore:
        from consumer.tools.training import local_store

        tracking_uri, artifact_location = local_store(directory)
        return cls(Path(directory), tracking_uri, artifact_location)


@dataclass(frozen=True)
class RegisteredModel:
    """A model :func:`train_and_register` put in ``store``: ``uri`` (``models:/<name>@<alias>``) and ``version``."""

    store: ModelStore
    result: TrainResult

    @property
    def uri(self) -> str:
        return f"models:/{self.result.name}@{self.result.alias}"

    @property
    def version(self) -> str:
        return self.result.version

    @property
    def tracking_uri(self) -> str:
        return self.store.tracking_uri

    @cached_property
    def model_dir(self) -> Path:
        """The logged model's directory in the artifact store."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return Path(client.get_model_version_download_uri(self.result.name, self.result.version))


def train_and_register(
    store: ModelStore,
    *,
    sample: int,
    n_estimators: int,
    serialization_format: str = "skops",
    registered_name: str = "ride-duration",
) -> RegisteredModel:
    """:func:`consumer.tools.training.train` on ``sample`` trips of :data:`TRIPS`, registered in ``store`` as
    ``registered_name`` @production."""
    from consumer.tools.training import train

    result = train(
        str(trips_file()),
        tracking_uri=store.tracking_uri,
        artifact_location=store.artifact_location,
        registered_name=registered_name,
        sample=sample,
        n_estimators=n_estimators,
        serialization_format=serialization_format,
    )
    return RegisteredModel(store, result)
