"""Train the ride-duration model on a month of TLC green-taxi trips and register it in MLflow.

The model is the one the streaming Lambda served: ``make_pipeline(DictVectorizer(), RandomForestRegressor(...))``
on ``{"PU_DO": "<PULocationID>_<DOLocationID>", "trip_distance": miles}``, predicting minutes. Rows are built with
:func:`consumer.model.scorer.features`, the function the shards score with, so training and serving cannot drift.

It is logged with ``mlflow.sklearn.log_model`` (skops by default, cloudpickle on request), registered under
``registered_name`` and given ``alias``. mlflow is imported inside functions only.

The CLI's ``train`` command runs it by hand against a local store (:func:`local_store`) or a tracking server.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import structlog

from consumer.model.features import Ride, features
from consumer.model.scorer import single_threaded

__all__ = [
    "SKOPS_TRUSTED_TYPES",
    "TrainResult",
    "feature_rows",
    "local_store",
    "make_pipeline",
    "read_trips",
    "split_last_week",
    "train",
]

#: The types a skops file of this pipeline needs beyond skops' defaults, reviewed by hand. skops 0.16 does not
#: trust ``sklearn.tree._tree.Tree`` by default (its node arrays are indexed without bounds checks), so MLflow
#: refuses to log a random forest in skops format unless it is listed. MLflow records this list in MLmodel and
#: model_store trusts exactly what is recorded there.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = ("sklearn.tree._tree.Tree",)

MIN_MINUTES = 1.0
MAX_MINUTES = 60.0
VALIDATION_DAYS = 7

_COLUMNS = [
    "lpep_pickup_datetime",
    "lpep_dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_distance",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What one training run produced. ``model_uri`` is the registry URI of the new version
    (``models:/<name>/<version>``); ``logged_model_uri`` is MLflow 3's ``models:/m-<id>``."""

    run_id: str
    model_uri: str
    logged_model_uri: str
    name: str
    version: str
    alias: str
    rmse: float
    rows_train: int
    rows_val: int
    serialization_format: str
    validation_from: str


def local_store(directory: Path) -> tuple[str, str]:
    """The local tracking store under ``directory``: ``(sqlite:///<dir>/mlflow.db, <dir>/artifacts)``."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'mlflow.db'}", str(directory / "artifacts")


def read_trips(parquet: str) -> pd.DataFrame:
    """Read a TLC green-taxi parquet (a path or a URL) and add ``duration`` in minutes, keeping 1..60 minutes
    and rows with both zones and a distance."""
    df = pd.read_parquet(parquet, columns=_COLUMNS)
    df = df.dropna(subset=["PULocationID", "DOLocationID", "trip_distance"])
    duration = (df["lpep_dropoff_datetime"] - df["lpep_pickup_datetime"]).dt.total_seconds() / 60.0
    df = df.assign(duration=duration)
    return df[(df["duration"] >= MIN_MINUTES) & (df["duration"] <= MAX_MINUTES)].reset_index(drop=True)


def split_last_week(
    df: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Hold out the last 7 calendar days of the file's month for validation.

    The month is the most common pickup month in the file (TLC files carry a few rows with wrong clocks, e.g.
    2009). The cut is midnight at the start of day ``days_in_month - 6`` of that month: for January 2022 it is
    2022-01-25 00:00, so validation is every pickup on 25..31 January and training every pickup before.
    A stray row from another month goes to whichever side of the cut its pickup time falls on.
    Returns ``(train, validation, cut)``.
    """
    month = df["lpep_pickup_datetime"].dt.to_period("M").mode().iloc[0]
    days = calendar.monthrange(month.year, month.month)[1]
    cut = pd.Timestamp(year=month.year, month=month.month, day=days - VALIDATION_DAYS + 1)
    before = df["lpep_pickup_datetime"] < cut
    return df[before], df[~before], cut


def feature_rows(df: pd.DataFrame) -> list[dict[str, str | float]]:
    """The model inputs of a trips frame, made by :func:`consumer.model.scorer.features` on one Ride per row."""
    pu = df["PULocationID"].astype("int64").tolist()
    do = df["DOLocationID"].astype("int64").tolist()
    miles = df["trip_distance"].astype("float64").tolist()
    return [
        features(Ride(ride_id=i, pu_location_id=p, do_location_id=d, trip_distance=m))
        for i, (p, d, m) in enumerate(zip(pu, do, miles, strict=True))
    ]


def make_pipeline(*, n_estimators: int = 100, n_jobs: int = -1) -> Any:
    """The Lambda's model: DictVectorizer then a random forest (max_depth=20, min_samples_leaf=10)."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline as sk_make_pipeline

    forest = RandomForestRegressor(
        max_depth=20,
        n_estimators=n_estimators,
        min_samples_leaf=10,
        random_state=0,
        n_jobs=n_jobs,
    )
    return sk_make_pipeline(DictVectorizer(), forest)


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if artifact_location and experiment.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
            log.warning(
                "experiment_artifact_location_differs",
                experiment=name,
                existing=experiment.artifact_location,
                requested=artifact_location,
            )
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_location))


@contextmanager
def _tracking(mlflow: Any, tracking_uri: str) -> Iterator[None]:
    """Point mlflow's fluent API (start_run, log_model) at ``tracking_uri``, then put the previous URI back."""
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _log_model(
    mlflow: Any,
    pipeline: Any,
    serialization_format: str,
    example: list[dict[str, Any]],
    params: dict[str, Any],
    metrics: dict[str, float],
) -> Any:
    """Log params, metrics and the pipeline into the active run; return mlflow's ModelInfo."""
    import mlflow.sklearn

    mlflow.log_params(params)
    mlflow.log_metrics(metrics)
    return mlflow.sklearn.log_model(
        pipeline,
        name="model",
        serialization_format=serialization_format,
        skops_trusted_types=list(SKOPS_TRUSTED_TYPES) if serialization_format == "skops" else None,
        input_example=example,
        signature=_signature(pipeline, example),
        pip_requirements=_pip_requirements(serialization_format),
    )


def _signature(pipeline: Any, example: list[dict[str, Any]]) -> Any:
    """The model's signature: its input is a list of feature dicts (``PU_DO`` a string, ``trip_distance`` a double),
    its output one duration per row.

    MLflow's pyfunc enforces a column signature by building a DataFrame, which DictVectorizer cannot read; marked as
    taken from the input example (MLflow's TypeFromExample, which ``mlflow.pyfunc`` sets for a model whose input is
    a list), the pyfunc turns that DataFrame back into the example's form, a list of dicts. So MLflow's own check of
    the serving input example, ``mlflow models serve`` and ``pyfunc.predict(list_of_dicts)`` all feed the pipeline
    what it takes; the sklearn flavor (what the consumer loads) is unchanged.
    """
    from mlflow.models import infer_signature

    signature = infer_signature(example, pipeline.predict(example))
    signature._is_type_hint_from_example = True  # what update_signature_for_type_hint_from_example sets
    return signature


def _pip_requirements(serialization_format: str) -> list[str]:
    """Pinned requirements of the logged model. Explicit, because MLflow's inference loads the model in a
    subprocess (seconds) and picks up whatever else is imported (pytest, argparse)."""
    from importlib.metadata import version

    packages = ["mlflow", "scikit-learn", "scipy", "numpy", serialization_format]
    return [f"{package}=={version(package)}" for package in packages]


def _register(
    client: Any,
    name: str,
    alias: str,
    *,
    source: str,
    run_id: str,
    model_id: str | None,
) -> str:
    """Create a version of ``name`` from the logged model and point ``alias`` at it; return the version."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    version = client.create_model_version(name=name, source=source, run_id=run_id, model_id=model_id)
    client.set_registered_model_alias(name, alias, str(version.version))
    return str(version.version)


def train(
    parquet: str,
    *,
    tracking_uri: str,
    registered_name: str = "ride-duration",
    alias: str = "production",
    sample: int | None = None,
    n_estimators: int = 100,
    serialization_format: str = "skops",
    experiment: str = "ride-duration",
    artifact_location: str | None = None,
) -> TrainResult:
    """Train, validate on the last week of the month (see :func:`split_last_week`), log and register.

    ``sample`` draws that many trips at random (seed 0) before the split, for quick runs. ``artifact_location``
    is used when the experiment is created (see :func:`local_store`). ``serialization_format`` is ``"skops"``
    (MLflow 3's default; the forest's tree type is trusted explicitly, see :data:`SKOPS_TRUSTED_TYPES`) or
    ``"cloudpickle"``. The forest trains with ``n_jobs=-1`` and is logged with ``n_jobs=1``.
    """
    import mlflow
    from mlflow import MlflowClient
    from sklearn.metrics import root_mean_squared_error

    if serialization_format not in ("skops", "cloudpickle"):
        raise ValueError(f"serialization_format must be 'skops' or 'cloudpickle', not {serialization_format!r}")
    started = time.perf_counter()
    trips = read_trips(parquet)
    if sample is not None and sample < len(trips):
        trips = trips.sample(n=sample, random_state=0).sort_values("lpep_pickup_datetime", kind="stable")
    train_df, val_df, cut = split_last_week(trips)
    if train_df.empty or val_df.empty:
        raise ValueError(f"{parquet}: {len(train_df)} training and {len(val_df)} validation rows; need both")
    x_train, x_val = feature_rows(train_df), feature_rows(val_df)
    y_train, y_val = train_df["duration"].to_numpy(), val_df["duration"].to_numpy()

    pipeline = make_pipeline(n_estimators=n_estimators, n_jobs=-1)
    pipeline.fit(x_train, y_train)
    rmse = float(root_mean_squared_error(y_val, pipeline.predict(x_val)))
    fitted = time.perf_counter()
    log.info(
        "trained",
        rmse=rmse,
        rows_train=len(x_train),
        rows_val=len(x_val),
        seconds=round(fitted - started, 1),
    )
    single_threaded(pipeline)

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment, artifact_location)
    forest = pipeline.steps[-1][1].get_params()
    params = {
        "parquet": parquet,
        "sample": sample,
        "validation_from": cut.isoformat(),
        "serialization_format": serialization_format,
        **{key: forest[key] for key in ("max_depth", "n_estimators", "min_samples_leaf", "random_state")},
    }
    metrics = {"rmse": rmse, "rows_train": len(x_train), "rows_val": len(x_val)}
    # The registry resolves a models:/m-<id> source through mlflow's global tracking URI: register inside too.
    with _tracking(mlflow, tracking_uri):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = _log_model(mlflow, pipeline, serialization_format, x_val[:5], params, metrics)
        version = _register(
            client,
            registered_name,
            alias,
            source=info.model_uri,
            run_id=run.info.run_id,
            model_id=info.model_id,
        )
    log.info(
        "registered",
        name=registered_name,
        version=version,
        alias=alias,
        run_id=run.info.run_id,
        format=serialization_format,
        seconds=round(time.perf_counter() - fitted, 1),
    )
    return TrainResult(
        run_id=run.info.run_id,
        model_uri=f"models:/{registered_name}/{version}",
        logged_model_uri=info.model_uri,
        name=registered_name,
        version=version,
        alias=alias,
        rmse=rmse,
        rows_train=len(x_train),
        rows_val=len(x_val),
        serialization_format=serialization_format,
        validation_from=cut.isoformat(),
    )
