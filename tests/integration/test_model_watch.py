"""The launcher's watch of a registry alias against a real MLflow tracking server: the alias's version asked over
the REST API (and by the preparation child, for registries the launcher cannot ask itself), a new version prepared
by the real preparation child and published, a version the trust rules refuse left unserved, a rollback served
from the cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumer.errors import ModelError
from consumer.model.current import publish, target
from consumer.model.prepared import METADATA_FILE
from consumer.runtime.health import LauncherState
from consumer.runtime.modelwatch import Alias, ModelWatch, RestRegistry
from consumer.runtime.preparation import prepare_model, resolve_version
from consumer.runtime.settings import ModelSettings, Settings
from tests.support.models import ModelStore, RegisteredModel, train_and_register
from tests.support.tracking import tracking_server

pytestmark = pytest.mark.usefixtures("mlflow_isolation", "trips_file")

NAME = "ride-duration-watch"
ALIAS = Alias(NAME, "production")


@dataclass(frozen=True)
class Registry:
    """Three versions of one registered model behind a tracking server: 1 and 2 in skops (different forests), 3 in
    cloudpickle, which the default trust rules refuse."""

    url: str
    store: ModelStore
    versions: tuple[RegisteredModel, ...]

    def point(self, version: str) -> None:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=self.url, registry_uri=self.url).set_registered_model_alias(
            NAME, ALIAS.alias, version
        )


@pytest.fixture(scope="module")
def registry(tmp_path_factory, decoy_tracking_uri) -> Iterator[Registry]:
    store = ModelStore.at(tmp_path_factory.mktemp("watch-store"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.setenv("MLFLOW_TRACKING_URI", decoy_tracking_uri)
        versions = tuple(
            train_and_register(store, registered_name=NAME, sample=3_000, n_estimators=trees, serialization_format=fmt)
            for trees, fmt in ((5, "skops"), (9, "skops"), (5, "cloudpickle"))
        )
    assert [model.version for model in versions] == ["1", "2", "3"]
    with tracking_server(store, tmp_path_factory.mktemp("watch-server")) as url:
        yield Registry(url, store, versions)


def test_the_alias_is_asked_over_the_rest_api_as_it_moves(registry):
    ask = RestRegistry(registry.url, ALIAS)
    registry.point("1")
    assert ask() == "1"
    registry.point("2")
    assert ask() == "2"
    unknown = r"models:/ride-duration-watch@nowhere: the registry answered 400: Registered model alias nowhere"
    with pytest.raises(ModelError, match=unknown):
        RestRegistry(registry.url, Alias(NAME, "nowhere"))()


def test_the_preparation_child_answers_the_same_version_for_other_registries(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.store.tracking_uri)  # sqlite: not asked over HTTP
    registry.point("2")
    settings = ModelSettings(model_uri=f"models:/{NAME}@production", model_cache_dir=tmp_path)
    assert resolve_version(settings) == "2"
    assert list(tmp_path.iterdir()) == []  # nothing downloaded


@pytest.fixture
def launcher(registry, monkeypatch, tmp_path) -> tuple[ModelWatch, LauncherState, Path]:
    """What the launcher holds after start-up on version 1: its state, the published pointer, the watch."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.url)  # the preparation child's registry
    registry.point("1")
    settings = Settings(
        model_uri=f"models:/{NAME}@production",
        model_cache_dir=tmp_path / "cache",
        aws_region="us-east-1",
        input_stream_name="rides",
        predictions_stream_name="predictions",
        dead_letter_stream_name="dead-letters",
        kcl_application_name="watch-test",
    )
    prepared, seconds = prepare_model(settings)
    state = LauncherState(tmp_path / "metrics")
    state.model_prepared({"name": NAME, "version": "1", "uri": settings.model_uri}, seconds)
    pointer = tmp_path / "model-current"
    publish(pointer, prepared)
    watch = ModelWatch(
        settings, ALIAS, serving="1", pointer=pointer, state=state, query=RestRegistry(registry.url, ALIAS)
    )
    return watch, state, pointer


def version_at(pointer: Path) -> str:
    return str(json.loads((target(pointer) / METADATA_FILE).read_text())["version"])


def test_a_promotion_is_prepared_and_published_a_refused_version_changes_nothing_a_rollback_is_reused(
    registry, launcher
):
    watch, state, pointer = launcher
    first = target(pointer)

    registry.point("2")
    watch.check()
    assert version_at(pointer) == "2"
    assert state.model is not None and state.model["version"] == "2"
    assert state.model["model_path"] == "onnx"

    registry.point("3")  # cloudpickle: refused by the default trust rules
    watch.check()
    assert version_at(pointer) == "2"
    assert state.model_refusals == {"3": 1}
    assert state.alias_refused_version == "3"
    watch.check()
    assert state.model_refusals == {"3": 1}  # not prepared again while the alias stays there

    registry.point("1")  # rolled back
    watch.check()
    assert target(pointer) == first  # the directory prepared at start-up, reused
    assert state.alias_refused_version is None
    assert state.model_refusals == {"3": 1}
