"""A broken model is told from rides it cannot score, over the MultiLang protocol: a model that fails on a whole
batch and on its probe rides stops the shard with nothing dead-lettered or checkpointed; a model that fails on one
ride (a batch of one!) but scores the probe rides dead-letters that ride and moves on."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.model.prepared import ModelInfo
from consumer.tools.tail import read_all
from tests.protocol.test_multilang import answer_checkpoint, initialize, process, record
from tests.support.factories import ride_payload
from tests.support.models import model_pipeline, training_rows, write_prepared

FRAGILE_ABOVE_MILES = 89.0  # expm1 of the distance passes float32's range above ~88.7 miles


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """``broken``: a forest behind a vectorizer of another width, so every predict call raises (what a corrupt or
    mismatched artifact does); ``fragile``: a forest behind expm1 of the distance, which raises on long trips only."""
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.preprocessing import FunctionTransformer

    rows, durations = training_rows(head=2000, max_miles=60)
    root = tmp_path_factory.mktemp("models")

    broken = model_pipeline(RandomForestRegressor(n_estimators=3, random_state=0)).fit(rows, durations)
    broken.steps[0] = ("dictvectorizer", DictVectorizer().fit(rows[:10]))
    fragile = model_pipeline(
        FunctionTransformer(np.expm1, accept_sparse=True), RandomForestRegressor(n_estimators=3, random_state=0)
    ).fit(rows, durations)
    return {
        "broken": write_prepared(root / "broken", broken, ModelInfo("test://broken", "broken", "5", None)),
        "fragile": write_prepared(root / "fragile", fragile, ModelInfo("test://fragile", "fragile", "6", None)),
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
    assert read_all(kinesis, streams.dead_letters, expect=None, timeout=1) == []
    assert read_all(kinesis, streams.predictions, expect=None, timeout=1) == []


def test_a_batch_of_one_ride_the_model_cannot_score_is_dead_lettered_when_the_probe_scores(
    start_processor, models, local_stack, streams
):
    processor = start_processor(PREPARED_MODEL_DIR=str(models["fragile"]))
    initialize(processor)
    process(processor, [record(ride_payload(7, distance=FRAGILE_ABOVE_MILES + 31), 7)])

    asked = answer_checkpoint(processor)
    assert asked["sequenceNumber"] == record(b"", 7)["sequenceNumber"]
    assert processor.receive() == {"action": "status", "responseFor": "processRecords"}
    [dead] = read_all(local_stack.kinesis_client(), streams.dead_letters, expect=1, timeout=20)
    assert dead.event["reason"] == "model_error"
    assert "infinity" in dead.event["detail"]
    assert not any(event.get("event") == "model_broken" for event in processor.log_events())
