"""The launcher reports which path the shards score with: ride_consumer_model_path_info{model_path}."""

import json
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from consumer.model.prepared import FAST_METADATA_FILE, scoring_path
from consumer.runtime.health import LauncherState
from consumer.runtime.metrics import LauncherCollector


def scrape(model: dict[str, str] | None) -> str:
    state = LauncherState(Path("/nonexistent"))
    if model is not None:
        state.model_prepared(model, 1.0)
    registry = CollectorRegistry()
    registry.register(LauncherCollector(state))
    return generate_latest(registry).decode()


def test_the_scoring_path_is_a_labelled_info_metric():
    text = scrape({"name": "n", "version": "1", "uri": "u", "model_path": "onnx"})

    assert 'ride_consumer_model_path_info{model_path="onnx"} 1.0' in text


def test_the_model_path_metric_has_no_sample_before_the_model_is_prepared():
    assert "ride_consumer_model_path_info{" not in scrape(None)


def test_the_scoring_path_is_onnx_only_when_the_prepared_directory_holds_a_compiled_model(tmp_path):
    assert scoring_path(tmp_path) == "sklearn"  # prepared before the fast path: no fastpath.json
    (tmp_path / FAST_METADATA_FILE).write_text(json.dumps({"compiled": False, "reason": "not a forest"}))
    assert scoring_path(tmp_path) == "sklearn"
    (tmp_path / FAST_METADATA_FILE).write_text(json.dumps({"compiled": True, "layout": {}}))
    assert scoring_path(tmp_path) == "onnx"
