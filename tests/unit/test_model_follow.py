"""Following the registry without processes: which URIs are watched, the pointer's atomic publication, the follower
that loads what it names, the processor's switch at a batch boundary, and the watch's decisions (publish, refuse,
retry only after the alias moved). The registry and the preparation child are the integration and fault tiers'."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumer.errors import ModelError, SettingsError
from consumer.model.current import Follower, publish, target
from consumer.model.prepared import METADATA_FILE, ModelInfo
from consumer.pipeline.meter import ShardMetrics
from consumer.pipeline.sink import MemorySink
from consumer.runtime.health import LauncherState, readiness
from consumer.runtime.modelwatch import Alias, ModelWatch, RestRegistry, version_query, watched_alias
from consumer.runtime.preparation import Prepared
from consumer.runtime.settings import Settings, load_settings
from tests.support.factories import FakeRecord, ride_payload, ride_processor
from tests.support.fakes import ConstantModel, FakeCheckpointer, FakeInput

SHARD = FakeInput.shard_id


@pytest.mark.parametrize(
    ("uri", "alias"),
    [
        ("models:/ride-duration@production", Alias("ride-duration", "production")),
        ("models:///ride-duration@champion", Alias("ride-duration", "champion")),
        ("models:/ride-duration/3", None),
        ("models:/ride-duration/latest", None),
        ("models:/m-0123abcd", None),
        ("runs:/0123/model", None),
        ("s3://bucket/1/0123/artifacts/model", None),
        ("/models/ride-duration", None),
        ("models:/@production", None),
    ],
)
def test_only_a_registry_alias_is_watched(uri, alias):
    assert watched_alias(uri) == alias


def prepared_dir(root: Path, version: str) -> Path:
    """A prepared directory as far as the launcher reads it (model.json)."""
    directory = root / f"ride-duration-{version}"
    directory.mkdir(parents=True, exist_ok=True)
    metadata = {"uri": f"models:/ride-duration/{version}", "name": "ride-duration", "version": version}
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    return directory


def test_a_reader_of_the_pointer_finds_the_old_or_the_new_directory_never_anything_else(tmp_path):
    directories = [prepared_dir(tmp_path / "cache", str(version)) for version in range(2)]
    pointer = tmp_path / "model-current"
    publish(pointer, directories[0])
    seen: set[Path] = set()
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.add(target(pointer))
            except BaseException as exc:  # noqa: BLE001 - any failure to read is what this test is about
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for index in range(2000):
        publish(pointer, directories[index % 2])
    done.set()
    reader.join()

    assert errors == []
    assert seen == set(directories)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no staging link left


def test_a_plain_directory_is_its_own_target(tmp_path):
    directory = prepared_dir(tmp_path, "1")
    assert target(directory) == directory.resolve()


@dataclass
class FakeScorer:
    info: ModelInfo
    path: str = "onnx"


def loader(broken: set[str]):
    def load(path: Path) -> FakeScorer:
        version = json.loads((path / METADATA_FILE).read_text())["version"]
        if version in broken:
            raise ModelError(f"{path}: cannot load")
        return FakeScorer(ModelInfo(uri=f"models:/ride-duration/{version}", name=None, version=version, run_id=None))

    return load


def test_the_follower_loads_what_the_pointer_names_once_and_keeps_its_model_when_the_new_one_fails(tmp_path):
    pointer = tmp_path / "model-current"
    publish(pointer, prepared_dir(tmp_path, "1"))
    loads: list[str] = []
    load = loader(broken={"3"})

    def counting(path: Path) -> FakeScorer:
        loads.append(path.name)
        return load(path)

    follower = Follower(pointer, load=counting)  # type: ignore[arg-type]  # a fake scorer
    assert follower.scorer.info.version == "1"
    assert follower.check() is None  # unchanged: nothing loaded

    publish(pointer, prepared_dir(tmp_path, "2"))
    switched = follower.check()
    assert switched is not None and switched.info.version == "2"
    assert follower.check() is None

    publish(pointer, prepared_dir(tmp_path, "3"))
    assert follower.check() is None  # fails to load: version 2 keeps scoring
    assert follower.check() is None  # and it is not tried again at every batch
    assert follower.scorer.info.version == "2"

    publish(pointer, prepared_dir(tmp_path, "1"))
    rolled_back = follower.check()
    assert rolled_back is not None and rolled_back.info.version == "1"
    assert loads == ["ride-duration-1", "ride-duration-2", "ride-duration-3", "ride-duration-1"]


class Scripted:
    """Model updates handed to the processor: the next version when told to."""

    def __init__(self) -> None:
        self.pending: tuple[ConstantModel, str] | None = None

    def __call__(self) -> tuple[ConstantModel, str] | None:
        update, self.pending = self.pending, None
        return update


def batch(first: int, count: int = 3) -> list[FakeRecord]:
    return [FakeRecord(ride_payload(first + index), str(first + index)) for index in range(count)]


def test_the_processor_switches_at_a_batch_boundary_and_each_batch_carries_the_version_that_scored_it():
    registry = CollectorRegistry()
    updates = Scripted()
    clock = iter(range(1_800_000_000, 1_800_000_100)).__next__
    predictions = MemorySink("predictions")
    processor = ride_processor(
        predictions=predictions,
        model=ConstantModel(10.0),
        model_version="1",
        metrics=ShardMetrics.create(registry),
        model_updates=updates,
        clock=lambda: float(clock()),
    )
    processor.initialize(FakeInput())
    processor.process_records(FakeInput(batch(100), FakeCheckpointer()))
    updates.pending = (ConstantModel(20.0), "2")
    processor.process_records(FakeInput(batch(200), FakeCheckpointer()))
    processor.process_records(FakeInput(batch(300), FakeCheckpointer()))

    events = [orjson.loads(entry.data) for entry in predictions.written]
    stamped = [
        (event["prediction"]["ride_id"], event["version"], event["prediction"]["ride_duration"]) for event in events
    ]
    assert stamped == [
        *((ride, "1", 10.0) for ride in (100, 101, 102)),
        *((ride, "2", 20.0) for ride in (200, 201, 202, 300, 301, 302)),
    ]

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"shard_id": SHARD, **labels})

    assert sample("ride_consumer_shard_model_info", version="2") == 1
    assert sample("ride_consumer_shard_model_info", version="1") == 0
    assert sample("ride_consumer_model_switches_total") == 1
    assert sample("ride_consumer_shard_model_switch_timestamp_seconds") > 1_800_000_000
    by_version = {
        version: registry.get_sample_value("ride_consumer_predicted_duration_minutes_count", {"version": version})
        for version in ("1", "2")
    }
    assert by_version == {"1": 3, "2": 6}


# --- The watch ---------------------------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    for key, value in {
        "AWS_REGION": "us-east-1",
        "INPUT_STREAM_NAME": "rides",
        "PREDICTIONS_STREAM_NAME": "predictions",
        "DEAD_LETTER_STREAM_NAME": "dead-letters",
        "KCL_APPLICATION_NAME": "watch-test",
        "MODEL_URI": "models:/ride-duration@production",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_REFRESH_SECONDS": "3",
    }.items():
        monkeypatch.setenv(key, value)
    return load_settings()


class Registry:
    """Where the alias points (the version query), and the versions whose preparation fails."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.down = False

    def __call__(self) -> str:
        if self.down:
            raise ModelError("models:/ride-duration@production: cannot ask the registry: ConnectionRefusedError")
        return self.version


class Preparation:
    """The preparation child's answers: a prepared directory per version, or the refusal of a broken one."""

    def __init__(self, root: Path, broken: set[str]) -> None:
        self.root, self.broken, self.asked = root, broken, []

    def __call__(self, settings) -> Prepared:
        self.asked.append(settings.model_uri)
        version = settings.model_uri.rsplit("/", 1)[1]
        if version in self.broken:
            raise ModelError(f"{settings.model_uri}: the model is in cloudpickle format; ALLOW_PICKLE_MODELS=true")
        return Prepared(prepared_dir(self.root, version), 0.5)


def watch_for(settings: Settings, tmp_path: Path, registry: Registry, preparation: Preparation):
    state = LauncherState(tmp_path / "metrics")
    state.model_prepared({"name": "ride-duration", "version": "1", "uri": settings.model_uri}, 1.0)
    pointer = tmp_path / "model-current"
    publish(pointer, prepared_dir(tmp_path / "cache", "1"))
    watch = ModelWatch(
        settings,
        Alias("ride-duration", "production"),
        serving="1",
        pointer=pointer,
        state=state,
        query=registry,
        prepare=preparation,
    )
    return watch, state, pointer


def test_a_new_version_behind_the_alias_is_prepared_pinned_and_published(settings, tmp_path):
    registry, preparation = Registry("1"), Preparation(tmp_path / "cache", broken=set())
    watch, state, pointer = watch_for(settings, tmp_path, registry, preparation)

    watch.check()
    assert preparation.asked == []  # the alias has not moved

    registry.version = "2"
    watch.check()
    assert preparation.asked == ["models:/ride-duration/2"]  # pinned: a second move cannot mix versions
    assert target(pointer).name == "ride-duration-2"
    assert state.model is not None and state.model["version"] == "2"
    assert state.model["uri"] == "models:/ride-duration@production"
    watch.check()
    assert preparation.asked == ["models:/ride-duration/2"]


def test_a_version_that_fails_preparation_is_refused_counted_and_tried_again_only_after_the_alias_moved(
    settings, tmp_path
):
    registry, preparation = Registry("2"), Preparation(tmp_path / "cache", broken={"2"})
    watch, state, pointer = watch_for(settings, tmp_path, registry, preparation)
    state.daemon_initialized_now()

    watch.check()
    watch.check()
    assert preparation.asked == ["models:/ride-duration/2"]  # once: not at every interval
    assert state.model_refusals == {"2": 1}
    assert target(pointer).name == "ride-duration-1"  # version 1 keeps serving
    assert state.model is not None and state.model["version"] == "1"
    assert state.alias_refused_version == "2"  # what the alert reads, while the alias stays there

    registry.version = "1"  # rolled back
    watch.check()
    assert state.alias_refused_version is None
    registry.version = "2"  # and promoted again: tried again
    watch.check()
    assert preparation.asked == ["models:/ride-duration/2", "models:/ride-duration/2"]
    assert state.model_refusals == {"2": 2}


def test_a_registry_that_does_not_answer_changes_nothing_and_is_counted(settings, tmp_path):
    registry, preparation = Registry("2"), Preparation(tmp_path / "cache", broken=set())
    watch, state, pointer = watch_for(settings, tmp_path, registry, preparation)
    registry.down = True

    watch.check()

    assert state.model_refresh_failures == 1
    assert preparation.asked == []
    assert target(pointer).name == "ride-duration-1"


def test_readiness_does_not_depend_on_the_watch(settings, tmp_path):
    registry, preparation = Registry("2"), Preparation(tmp_path / "cache", broken={"2"})
    watch, state, _ = watch_for(settings, tmp_path, registry, preparation)

    class Running:
        def poll(self) -> None:
            return None

    state.daemon_started(Running())
    state.daemon_initialized_now()
    watch.check()  # refused
    assert readiness(state).ok
    registry.version = "3"
    watch.check()  # published
    assert readiness(state).ok
    assert readiness(state).reasons[0] == "model version 3 prepared"


def test_a_tracking_server_is_asked_over_http_and_any_other_registry_in_the_preparation_child(settings):
    alias = Alias("ride-duration", "production")
    over_http = version_query(settings, alias, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000/"})
    assert isinstance(over_http, RestRegistry)
    assert over_http.url == (
        "http://127.0.0.1:5000/api/2.0/mlflow/registered-models/alias?name=ride-duration&alias=production"
    )
    registry_wins = version_query(
        settings, alias, {"MLFLOW_TRACKING_URI": "file:///mlruns", "MLFLOW_REGISTRY_URI": "https://registry"}
    )
    assert isinstance(registry_wins, RestRegistry)
    assert not isinstance(version_query(settings, alias, {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}), RestRegistry)


def test_a_negative_refresh_interval_stops_start_up_naming_the_setting(settings, monkeypatch):
    monkeypatch.setenv("MODEL_REFRESH_SECONDS", "-1")
    with pytest.raises(SettingsError, match="MODEL_REFRESH_SECONDS"):
        load_settings()
    monkeypatch.setenv("MODEL_REFRESH_SECONDS", "0")
    assert load_settings().model_refresh_seconds == 0


def test_the_pointer_is_replaced_by_rename_and_never_removed(tmp_path, monkeypatch):
    """The publication is one rename(2) of a new link over the old one: no moment without a pointer."""
    pointer = tmp_path / "model-current"
    publish(pointer, prepared_dir(tmp_path, "1"))
    removed: list[str] = []
    real_unlink = os.unlink
    monkeypatch.setattr(os, "unlink", lambda path, *a, **k: (removed.append(str(path)), real_unlink(path, *a, **k)))
    publish(pointer, prepared_dir(tmp_path, "2"))
    assert str(pointer) not in removed
    assert target(pointer).name == "ride-duration-2"


def test_the_predicted_durations_histogram_counts_a_batch_exactly_as_observing_each_ride_would():
    from prometheus_client import Histogram

    from consumer.pipeline.meter import PREDICTION_BUCKETS

    durations = [0.5, 2.0, 2.0000001, 7.5, 15.0, 59.9, 60.0, 89.0, 90.0, 240.0, 12.25, 12.25]
    bulk_registry, each_registry = CollectorRegistry(), CollectorRegistry()
    ShardMetrics.create(bulk_registry).for_shard(SHARD).predicted("2", durations)
    each = Histogram(
        "ride_consumer_predicted_duration_minutes",
        "reference",
        ["version"],
        buckets=PREDICTION_BUCKETS,
        registry=each_registry,
    )
    for duration in durations:
        each.labels("2").observe(duration)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for metric in registry.collect()
            if metric.name == "ride_consumer_predicted_duration_minutes"
            for sample in metric.samples
            if not sample.name.endswith("_created")
        }

    assert samples(bulk_registry) == samples(each_registry)
    assert samples(bulk_registry)[("ride_consumer_predicted_duration_minutes_count", (("version", "2"),))] == 12
