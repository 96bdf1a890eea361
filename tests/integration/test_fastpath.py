"""The fast path: DictVectorizer + tree ensemble compiled to ONNX agrees with the pipeline; anything else falls back.

Small pipelines trained on real January 2022 trips; the held-out rides are the file's last week."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from consumer.model import compile as fastpath_compile
from consumer.model import prepared
from consumer.model.features import Ride, features
from consumer.model.prepared import METADATA_FILE, PIPELINE_FILE, ModelInfo
from consumer.model.scorer import load_prepared
from tests.support.models import model_pipeline, write_prepared

INFO = ModelInfo(uri="test://fast", name="fast", version="7", run_id=None)


@pytest.fixture(scope="module")
def trips(trips_file) -> tuple[list[dict], np.ndarray, list[dict]]:
    """(training rows, their durations, held-out rows of the last week)."""
    from consumer.tools.training import feature_rows, read_trips, split_last_week

    train, heldout, _ = split_last_week(read_trips(str(trips_file)))
    train = train.sample(n=4000, random_state=0)
    return feature_rows(train), train["duration"].to_numpy(), feature_rows(heldout.head(3000))


def fitted(estimator, trips):
    rows, durations, _ = trips
    return model_pipeline(estimator).fit(rows, durations)


def tree_ensembles():
    from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
    from sklearn.tree import DecisionTreeRegressor

    return [
        RandomForestRegressor(n_estimators=10, max_depth=20, min_samples_leaf=10, random_state=0),
        ExtraTreesRegressor(n_estimators=10, max_depth=12, random_state=0),
        GradientBoostingRegressor(n_estimators=30, max_depth=4, random_state=0),
        DecisionTreeRegressor(max_depth=15, random_state=0),
    ]


@pytest.mark.parametrize("estimator", tree_ensembles(), ids=lambda e: type(e).__name__)
def test_compiled_tree_ensemble_agrees_with_the_pipeline_on_held_out_rides(estimator, trips, tmp_path):
    pipeline = fitted(estimator, trips)
    heldout = trips[2]

    state = fastpath_compile.compile_into(write_prepared(tmp_path, pipeline, INFO), pipeline, INFO, heldout)
    scorer = load_prepared(tmp_path)

    assert state.compiled, state.reason
    assert scorer.path == "onnx"
    assert state.heldout_rows == len(heldout)
    assert state.heldout_max_abs_diff <= prepared.TOLERANCE_MINUTES
    assert state.probe_max_abs_diff <= prepared.TOLERANCE_MINUTES
    assert state.used_features < state.vectorizer_features
    difference = np.abs(scorer.predict_rows(heldout) - pipeline.predict(heldout))
    assert difference.max() <= prepared.TOLERANCE_MINUTES


def test_compiled_scorer_scores_rides_like_the_pipeline_including_unseen_zone_pairs(trips, tmp_path):
    pipeline = fitted(tree_ensembles()[0], trips)
    fastpath_compile.compile_into(write_prepared(tmp_path, pipeline, INFO), pipeline, INFO)
    rides = [Ride(1, 130, 205, 3.66), Ride("b", 264, 264, 0.0), Ride(3, 1, 1, 999.0), Ride(4, 7, 7, 12.25)]

    scorer = load_prepared(tmp_path)
    predictions = scorer.predict(rides)

    assert predictions.dtype == np.float64 and predictions.shape == (4,)
    expected = pipeline.predict([features(ride) for ride in rides])
    assert np.abs(predictions - expected).max() <= prepared.TOLERANCE_MINUTES
    assert scorer.predict([]).shape == (0,)
    assert scorer.info == INFO


def test_non_tree_model_is_not_compiled_and_scores_with_the_pipeline(trips, tmp_path):
    from sklearn.linear_model import LinearRegression

    pipeline = fitted(LinearRegression(), trips)

    state = fastpath_compile.compile_into(write_prepared(tmp_path, pipeline, INFO), pipeline, INFO)
    scorer = load_prepared(tmp_path)

    assert not state.compiled
    assert "DictVectorizer -> LinearRegression" in state.reason
    assert not (tmp_path / prepared.FAST_MODEL_FILE).exists()
    assert prepared.read_state(tmp_path) == state
    assert scorer.path == "sklearn"
    assert np.array_equal(
        scorer.predict([Ride(1, 130, 205, 3.66)]), pipeline.predict([features(Ride(1, 130, 205, 3.66))])
    )


def test_pipeline_with_another_first_step_is_not_compiled(trips, tmp_path):
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.preprocessing import MaxAbsScaler

    rows, durations, _ = trips
    scaled = model_pipeline(MaxAbsScaler(), RandomForestRegressor(n_estimators=2, random_state=0)).fit(rows, durations)

    state = fastpath_compile.compile_into(write_prepared(tmp_path, scaled, INFO), scaled, INFO)

    assert not state.compiled
    assert "DictVectorizer -> MaxAbsScaler -> RandomForestRegressor" in state.reason


def test_compiled_model_that_disagrees_on_held_out_rows_is_not_used(trips, tmp_path):
    from sklearn.pipeline import Pipeline

    pipeline = fitted(tree_ensembles()[3], trips)
    rows = trips[2][:50]

    class Shifted(Pipeline):
        """The same pipeline, 0.01 minutes later: what a wrong conversion would look like."""

        def predict(self, X, **params):
            return super().predict(X, **params) + 0.01

    state = fastpath_compile.compile_into(write_prepared(tmp_path, pipeline, INFO), Shifted(pipeline.steps), INFO, rows)

    assert not state.compiled
    assert "differs by up to 0.01 minutes" in state.reason
    assert load_prepared(tmp_path).path == "sklearn"


def test_unloadable_compiled_model_falls_back_to_the_pipeline(trips, tmp_path):
    pipeline = fitted(tree_ensembles()[3], trips)
    fastpath_compile.compile_into(write_prepared(tmp_path, pipeline, INFO), pipeline, INFO)
    (tmp_path / prepared.FAST_MODEL_FILE).write_bytes(b"not an onnx model")

    scorer = load_prepared(tmp_path)

    assert scorer.path == "sklearn"
    assert load_prepared(tmp_path, prefer_compiled=False).path == "sklearn"


def test_directory_prepared_before_the_fast_path_loads_the_pipeline(trips, tmp_path):
    pipeline = fitted(tree_ensembles()[3], trips)
    (tmp_path / "compiled").mkdir()
    compiled = write_prepared(tmp_path / "compiled", pipeline, INFO)
    fastpath_compile.compile_into(compiled, pipeline, INFO)
    old = tmp_path / "old"
    old.mkdir()
    for name in (PIPELINE_FILE, METADATA_FILE):
        shutil.copy(compiled / name, old / name)

    assert prepared.read_state(old) is None
    assert load_prepared(old).path == "sklearn"
    assert load_prepared(compiled).path == "onnx"


def test_a_distance_beyond_float32_is_refused_by_both_paths_as_the_trees_refuse_it(trips, tmp_path):
    pipeline = fitted(tree_ensembles()[0], trips)
    fastpath_compile.compile_into(write_prepared(tmp_path, pipeline, INFO), pipeline, INFO)
    ride = Ride(1, 130, 205, 1e39)  # finite, but past float32, the trees' input type

    for scorer in (load_prepared(tmp_path), load_prepared(tmp_path, prefer_compiled=False)):
        with pytest.raises(ValueError, match=r"infinity or a value too large for dtype\('float32'\)"):
            scorer.predict([ride])
    assert load_prepared(tmp_path).path == "onnx"
