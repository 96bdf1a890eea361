"""Fixtures for the protocol tier: record_processor.py as a subprocess, fed MultiLang JSON lines, writing to the
Kinesis emulator. The model is a small pipeline prepared the way the launcher prepares one."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.tools.multilang import MultiLangDriver
from consumer.tools.paths import REPO_ROOT


@pytest.fixture(scope="session")
def prepared_model(tmp_path_factory) -> Path:
    """A small DictVectorizer + RandomForest pipeline in the prepared-artifact format shard processes load."""
    import joblib
    import pandas as pd
    import sklearn
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline

    from consumer.model.prepared import METADATA_FILE, PIPELINE_FILE

    trips = pd.read_parquet(REPO_ROOT.parent / "shared/data/green_tripdata_2022-01.parquet").head(3000)
    duration = (trips.lpep_dropoff_datetime - trips.lpep_pickup_datetime).dt.total_seconds() / 60
    rows = [
        {"PU_DO": f"{pu}_{do}", "trip_distance": float(distance)}
        for pu, do, distance in zip(trips.PULocationID, trips.DOLocationID, trips.trip_distance, strict=True)
    ]
    pipeline = make_pipeline(DictVectorizer(), RandomForestRegressor(n_estimators=5, max_depth=8, random_state=0))
    pipeline.fit(rows, duration)
    directory = tmp_path_factory.mktemp("prepared")
    joblib.dump(pipeline, directory / PIPELINE_FILE)
    (directory / METADATA_FILE).write_text(
        json.dumps(
            {
                "uri": "test://tiny",
                "name": "tiny",
                "version": "42",
                "run_id": None,
                "sklearn_version": sklearn.__version__,
            }
        )
    )
    return directory


@pytest.fixture
def streams(local_stack) -> dict[str, str]:
    names = {
        "INPUT_STREAM_NAME": f"rides-{uuid.uuid4().hex[:8]}",
        "PREDICTIONS_STREAM_NAME": f"predictions-{uuid.uuid4().hex[:8]}",
        "DEAD_LETTER_STREAM_NAME": f"dead-letters-{uuid.uuid4().hex[:8]}",
    }
    local_stack.create_stream(names["PREDICTIONS_STREAM_NAME"], 1)
    local_stack.create_stream(names["DEAD_LETTER_STREAM_NAME"], 1)
    return names


@pytest.fixture
def processor_env(local_stack, streams, prepared_model) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KCL_"))}
    env.update(local_stack.env())
    env.update(streams)
    env.update(
        KCL_APPLICATION_NAME="protocol-test",
        MODEL_URI="test://tiny",
        PREPARED_MODEL_DIR=str(prepared_model),
        PUT_MAX_ATTEMPTS="2",
        PUT_BACKOFF_MAX_SECONDS="0.2",
    )
    return env


@pytest.fixture
def start_processor(processor_env) -> Iterator[Any]:
    """Start record_processor.py with the protocol tier's environment (plus overrides), driven by the shared
    MultiLang driver (consumer.tools.multilang)."""
    started: list[MultiLangDriver] = []

    def start(**overrides: str) -> MultiLangDriver:
        processor = MultiLangDriver({**processor_env, **overrides}, cwd=REPO_ROOT)
        started.append(processor)
        return processor

    yield start
    for processor in started:
        processor.kill()
