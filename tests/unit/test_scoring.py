"""scoring: the feature function and the Scorer around a pipeline. No I/O."""

from __future__ import annotations

import numpy as np
import pytest

from consumer.model.features import Ride, features
from consumer.model.prepared import ModelInfo
from consumer.model.scorer import Scorer, single_threaded
from consumer.pipeline.events import decode_ride
from tests.support.factories import ride_payload

INFO = ModelInfo(uri="models:/ride-duration/3", name="ride-duration", version="3", run_id="abc")


class RecordingPipeline:
    """Predicts the trip distance; remembers every call."""

    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    def predict(self, rows):
        self.calls.append(rows)
        return [row["trip_distance"] * 2 for row in rows]


def test_features_join_the_zones_and_keep_the_distance():
    ride = Ride(ride_id=156, pu_location_id=130, do_location_id=205, trip_distance=3.66)

    assert features(ride) == {"PU_DO": "130_205", "trip_distance": 3.66}


def test_features_of_a_decoded_integer_distance_are_a_float():
    row = features(decode_ride(ride_payload(pu=1, do=265, distance=3)))

    assert row == {"PU_DO": "1_265", "trip_distance": 3.0}
    assert type(row["trip_distance"]) is float


def test_swapped_pickup_and_dropoff_zones_are_different_features():
    assert features(Ride(1, 205, 130, 1.0))["PU_DO"] != features(Ride(1, 130, 205, 1.0))["PU_DO"]


def test_predict_makes_one_call_for_the_whole_batch_in_order():
    pipeline = RecordingPipeline()
    rides = [Ride(i, 10 + i, 20, float(i)) for i in range(5)]

    predictions = Scorer(pipeline, INFO).predict(rides)

    assert len(pipeline.calls) == 1
    assert pipeline.calls[0] == [features(ride) for ride in rides]
    assert predictions.dtype == np.float64
    assert predictions.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_empty_batch_gives_an_empty_array_without_calling_the_model():
    pipeline = RecordingPipeline()

    predictions = Scorer(pipeline, INFO).predict([])

    assert predictions.shape == (0,)
    assert pipeline.calls == []


def test_model_errors_reach_the_caller():
    class Broken:
        def predict(self, rows):
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        Scorer(Broken(), INFO).predict([Ride(1, 1, 2, 1.0)])


def test_scorer_carries_what_model_it_is():
    assert Scorer(RecordingPipeline(), INFO).info.version == "3"


def test_single_threaded_sets_n_jobs_to_one_on_every_step():
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(DictVectorizer(), RandomForestRegressor(n_jobs=-1))

    assert single_threaded(pipeline) is pipeline
    assert pipeline.steps[-1][1].n_jobs == 1
