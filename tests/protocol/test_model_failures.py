"""A broken model is told from rides it cannot score, over the MultiLang protocol: a model that fails on a whole
batch and on its probe rides stops the shard with nothing dead-lettered or checkpointed; a model that fails on one
ride (a batch of one!) but scores the probe rides dead-letters that ride and moves on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.tools.paths import REPO_ROOT
from consumer.tools.tail import read_all
from tests.protocol.test_multilang import answer_checkpoint, initialize, process, record
from tests.unit.factories import ride_payload

FRAGILE_ABOVE_MILES = 89.0  # expm1 of the distance passes float32's range above ~88.7 miles


def write_prepared(directory: Path, pipeline, version: str) -> Path:
    """A prepared directory as shard processes load it (the pipeline path: no compiled model)."""
    import joblib
    import sklearn

    from consumer.model.prepared import METADATA_FILE, PIPELINE_FILE

    directory.mkdir()
    joblib.dump(pipeline, directory / PIPELINE_FILE)
    metadata = {"uri": f"test://{directory.name}", "version": version, "sklearn_version": sklearn.__version__}
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """``broken``: a forest behind a vectorizer of another width, so every predict call raises (what a corrupt or
    mismatched artifact does); ``fragile``: a forest behind expm1 of the distance, which raises on long trips only."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    trips = pd.read_parquet(REPO_ROOT.parent / "shared/data/green_tripdata_2022-01.parquet").head(2000)
    trips = trips[trips.trip_distance < 60]
    duration = (trips.lpep_dropoff_datetime - trips.lpep_pickup_datetime).dt.total_seconds() / 60
    rows = [
        {"PU_DO": f"{pu}_{do}", "trip_distance": float(distance)}
        for pu, do, distance in zip(trips.PULocationID, trips.DOLocationID, trips.trip_distance, strict=True)
    ]
    root = tmp_path_factory.mktemp("models")

    broken = make_pipeline(DictVectorizer(), RandomForestRegressor(n_estimators=3, random_state=0)).fit(rows, duration)
    broken.steps[0] = ("dictvectorizer", DictVectorizer().fit(rows[:10]))

    fragile = make_pipeline(
        DictVectorizer(),
        FunctionTransformer(np.expm1, accept_sparse=True),
        RandomForestRegressor(n_estimators=3, random_state=0),
    ).fit(rows, duration)
    return {
        "broken": write_prepared(root / "broken", broken, "5"),
        "fragile": write_prepared(root / "fragile", fragile, "6"),
    }


def test_a_model_broken_on_a_whole_batch_stops_the_shard_with_nothing_dead_lettered(
    start_processor, models, local_stack, streams
):
    processor = start_processor(PREPARED_MODEL_DIR=str(models["broken"]))
    initialize(processor)
    process(processor, [record(ride_payload(ride_id), ride_id) for ride_id in range(1, 4)])

    assert processor.receive() is None  # no checkpoint asked, no status: the daemon must not move on
    assert processor.exit_code() == 1
    [broken] = [event for event in processor.log_events() if event.get("event") == "model_broken"]
    assert "all 3 rides of the batch" in broken["error"]
    assert "probe rides" in broken["error"]
    kinesis = local_stack.kinesis_client()
    assert read_all(kinesis, streams["DEAD_LETTER_STREAM_NAME"], expect=None, timeout=1) == []
    assert read_all(kinesis, streams["PREDICTIONS_STREAM_NAME"], expect=None, timeout=1) == []


def test_a_batch_of_one_ride_the_model_cannot_score_is_dead_lettered_when_the_probe_scores(
    start_processor, models, local_stack, streams
):
    processor = start_processor(PREPARED_MODEL_DIR=str(models["fragile"]))
    initialize(processor)
    process(processor, [record(ride_payload(7, distance=FRAGILE_ABOVE_MILES + 31), 7)])

    asked = answer_checkpoint(processor)
    assert asked["sequenceNumber"] == record(b"", 7)["sequenceNumber"]
    assert processor.receive() == {"action": "status", "responseFor": "processRecords"}
    [dead] = read_all(local_stack.kinesis_client(), streams["DEAD_LETTER_STREAM_NAME"], expect=1, timeout=20)
    assert dead.event["reason"] == "model_error"
    assert "infinity" in dead.event["detail"]
    assert not any(event.get("event") == "model_broken" for event in processor.log_events())
