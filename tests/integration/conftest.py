"""Fixtures for the model tests: a temporary MLflow store (sqlite + local artifacts), the pipeline trained once per
serialization format on a sample of the real January 2022 trips, and an S3 emulator (moto) in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.model.features import Ride
from consumer.tools.localstack import free_port
from consumer.tools.training import read_trips, split_last_week
from tests.support.models import ModelStore, RegisteredModel, train_and_register

SAMPLE = 5_000
N_ESTIMATORS = 10
FORMATS = ("skops", "cloudpickle")


@pytest.fixture(scope="session")
def decoy_tracking_uri(tmp_path_factory) -> str:
    """A default tracking store that holds nothing: code that forgets to pass tracking_uri finds no model there
    (and never writes ./mlflow.db into the repo)."""
    return f"sqlite:///{tmp_path_factory.mktemp('decoy') / 'decoy.db'}"


def _isolate(patch: pytest.MonkeyPatch, decoy_tracking_uri: str) -> None:
    patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    patch.setenv("MLFLOW_TRACKING_URI", decoy_tracking_uri)
    for name in ("MLFLOW_REGISTRY_URI", "MLFLOW_S3_ENDPOINT_URL"):
        patch.delenv(name, raising=False)


@pytest.fixture
def mlflow_isolation(monkeypatch, decoy_tracking_uri) -> None:
    """Use in the model tests (``pytestmark``): no telemetry, the decoy as mlflow's default store."""
    _isolate(monkeypatch, decoy_tracking_uri)


@pytest.fixture(scope="session")
def store(tmp_path_factory, trips_file) -> ModelStore:
    return ModelStore.at(tmp_path_factory.mktemp("mlflow"))


def _train(store: ModelStore, serialization_format: str, decoy_tracking_uri: str) -> RegisteredModel:
    with pytest.MonkeyPatch.context() as patch:
        _isolate(patch, decoy_tracking_uri)
        return train_and_register(
            store,
            registered_name=f"ride-duration-{serialization_format}",
            sample=SAMPLE,
            n_estimators=N_ESTIMATORS,
            serialization_format=serialization_format,
        )


@pytest.fixture(scope="session")
def trained_skops(store, decoy_tracking_uri) -> RegisteredModel:
    return _train(store, "skops", decoy_tracking_uri)


@pytest.fixture(scope="session")
def trained_cloudpickle(store, decoy_tracking_uri) -> RegisteredModel:
    return _train(store, "cloudpickle", decoy_tracking_uri)


@pytest.fixture(scope="session", params=FORMATS)
def trained(request) -> RegisteredModel:
    """The model trained once per format, registered as ``ride-duration-<format>`` version 1 @production."""
    return request.getfixturevalue(f"trained_{request.param}")


@pytest.fixture(scope="session")
def rides(trips_file) -> list[Ride]:
    """300 real rides from the validation week, plus a zone pair no training row has."""
    _, validation, _ = split_last_week(read_trips(str(trips_file)))
    rows = validation.head(300)
    real = [
        Ride(ride_id=i, pu_location_id=int(pu), do_location_id=int(do), trip_distance=float(miles))
        for i, (pu, do, miles) in enumerate(zip(rows.PULocationID, rows.DOLocationID, rows.trip_distance, strict=True))
    ]
    return [*real, Ride(ride_id="unseen", pu_location_id=265, do_location_id=1, trip_distance=0.0)]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server as a subprocess on a free port of 127.0.0.1."""
    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {endpoint}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """A boto3 S3 client on the emulator, with MLFLOW_S3_ENDPOINT_URL and dummy credentials set for mlflow."""
    import boto3

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def upload(s3):
    """``upload(directory, bucket, prefix)`` copies every file under ``s3://bucket/prefix/`` and returns that URI."""

    def _upload(directory: Path, bucket: str, prefix: str) -> str:
        s3.create_bucket(Bucket=bucket)
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(directory).as_posix()}")
        return f"s3://{bucket}/{prefix}"

    return _upload
