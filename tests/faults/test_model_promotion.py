"""The model follows the registry on the real daemon: a 3-shard stream under steady load while the alias moves from
version 1 to version 2, to a version the trust rules refuse, and back to version 1 (MODEL_REFRESH_SECONDS=3).

Every ride is accounted for exactly once; each prediction equals the pipeline of the version it is stamped with;
per shard the version changes once per move, at a batch boundary, and the first batch after the publication is
scored by the new version; the refused version changes nothing but is counted; /readyz answers 200 throughout.
The switch times and the pod's memory (PSS) before and after a switch are printed (``-s``)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from consumer.model.features import features
from consumer.model.prepared import TOLERANCE_MINUTES
from consumer.pipeline.events import decode_ride
from consumer.tools.harness import ConsumerProcess, wait_for
from consumer.tools.ledger import read_stream
from tests.faults.conftest import Scenario, log_events
from tests.faults.test_crashes import WARM_UP, warmed_up
from tests.support.models import ModelStore, RegisteredModel, train_and_register
from tests.support.probes import http_get
from tests.support.tracking import tracking_server

NAME = "ride-duration"
REFRESH_SECONDS = 3.0
#: Asking the registry and waking the watch's thread, on a busy machine: the check lands within the interval
#: plus this.
CHECK_SLACK_SECONDS = 2.0


@dataclass(frozen=True)
class Registry:
    url: str
    versions: dict[str, RegisteredModel]

    def point(self, version: str) -> float:
        """Move the alias to ``version``; return when (Unix seconds, just before the move)."""
        from mlflow import MlflowClient

        moved = time.time()
        MlflowClient(tracking_uri=self.url, registry_uri=self.url).set_registered_model_alias(
            NAME, "production", version
        )
        return moved


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[Registry]:
    """Versions 1 and 2 trained differently (other trips, other forests), 3 in cloudpickle (refused by default)."""
    store = ModelStore.at(tmp_path_factory.mktemp("promotion-store"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
        trained = [
            train_and_register(store, sample=sample, n_estimators=trees, serialization_format=fmt)
            for sample, trees, fmt in ((4_000, 8, "skops"), (9_000, 16, "skops"), (3_000, 4, "cloudpickle"))
        ]
    with tracking_server(store, tmp_path_factory.mktemp("promotion-server")) as url:
        yield Registry(url, {model.version: model for model in trained})


def events_of(consumer: ConsumerProcess, name: str, **fields: str) -> list[dict[str, Any]]:
    return [
        event
        for event in log_events(consumer)
        if event.get("event") == name and all(str(event.get(key)) == value for key, value in fields.items())
    ]


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def pod_pss(consumer: ConsumerProcess) -> dict[str, float]:
    """The pod's proportional set size in MiB: every process, and the Python ones (launcher, fork server, workers,
    record processors) apart from the JVM."""
    assert consumer.process is not None
    root = psutil.Process(consumer.process.pid)
    total = python = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            pss = process.memory_full_info().pss / 2**20
            name = process.name()
        except psutil.Error:
            continue
        total += pss
        python += 0 if name == "java" else pss
    return {"total_mib": round(total, 1), "python_mib": round(python, 1)}


class Readiness(threading.Thread):
    """/readyz polled twice a second; every answer that was not 200 is kept."""

    def __init__(self, url: str) -> None:
        super().__init__(name="readyz", daemon=True)
        self.url, self.failures, self.polls, self.stop_event = f"{url}/readyz", [], 0, threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            status, body = http_get(self.url)
            self.polls += 1
            if status != 200:
                self.failures.append((time.time(), status, body))

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def wait_for_switches(run: Scenario, consumer: ConsumerProcess, version: str, shards: int, before: int) -> None:
    def switched() -> bool:
        return len(events_of(consumer, "model_switched", model_version=version)) >= before + shards

    assert wait_for(switched, timeout=120, interval=0.5), f"not every shard switched to {version}\n{run.tails(60)}"


def check_switch(
    consumer: ConsumerProcess, moved: float, version: str, previous: str, shards: set[str], until: float
) -> dict:
    """The watch asked within the interval; after the publication (and before the next move, ``until``) each shard
    finished at most the one batch it was in with the previous version, then switched. Returns the times."""
    [found] = [event for event in events_of(consumer, "model_version_found", version=version) if at(event) >= moved]
    assert at(found) - moved <= REFRESH_SECONDS + CHECK_SLACK_SECONDS, (found, moved)
    [published] = [event for event in events_of(consumer, "model_published", version=version) if at(event) >= moved]
    switched_at: dict[str, float] = {}
    for shard in shards:
        old_batches = [
            event
            for event in events_of(consumer, "batch_done", shard_id=shard, model_version=previous)
            if at(published) < at(event) < until
        ]
        assert len(old_batches) <= 1, (shard, old_batches)  # at most the batch in flight at the publication
        [switch] = [
            event
            for event in events_of(consumer, "model_switched", shard_id=shard, model_version=version)
            if at(event) >= at(published)
        ]
        switched_at[shard] = round(at(switch) - moved, 2)
    return {
        "asked_after_s": round(at(found) - moved, 2),
        "prepared_in_s": published["seconds"],
        "published_after_s": round(at(published) - moved, 2),
        "shard_switched_after_s": switched_at,
    }


def test_the_alias_moves_under_load_and_every_ride_is_scored_once_by_the_version_it_carries(
    scenario, registry: Registry, tmp_path: Path
):
    registry.point("1")
    run = scenario(input_shards=3)
    consumer = run.start(
        model_uri=f"models:/{NAME}@production",
        MLFLOW_TRACKING_URI=registry.url,
        MODEL_REFRESH_SECONDS=str(REFRESH_SECONDS),
        MODEL_CACHE_DIR=str(tmp_path / "model-cache"),
    )
    warmed_up(run)
    metrics_url = consumer.metrics_url()
    assert metrics_url is not None
    readiness = Readiness(metrics_url)
    readiness.start()
    load = run.load(1_500, rate=15, start_ride_id=1001)
    run.wait_for_outputs(WARM_UP + 100)
    shards = {event["shard_id"] for event in events_of(consumer, "shard_initialized")}
    assert len(shards) == 3, run.tails()

    pss_before = pod_pss(consumer)
    to_v2 = registry.point("2")
    wait_for_switches(run, consumer, "2", len(shards), before=0)
    time.sleep(2 * REFRESH_SECONDS)  # a few batches on the new version
    pss_after = pod_pss(consumer)

    to_broken = registry.point("3")
    assert wait_for(lambda: events_of(consumer, "model_refused", version="3"), timeout=120, interval=0.5), run.tails()
    time.sleep(2 * REFRESH_SECONDS)  # the watch asks again meanwhile: the refused version is not prepared again
    assert len(events_of(consumer, "model_version_found", version="3")) == 1
    assert len(events_of(consumer, "model_switched")) == len(shards)  # nothing changed

    back_to_v1 = registry.point("1")
    wait_for_switches(run, consumer, "1", len(shards), before=0)

    sent = load.result(timeout=300).records_sent
    ledger = run.wait_until_accounted(WARM_UP + sent, timeout=240)
    readiness.stop()
    run.record(ledger)

    # Every ride exactly once.
    counts = ledger.counts
    assert ledger.complete, ledger.as_dict()
    assert (counts["missing"], counts["duplicated"], counts["dead_lettered"]) == (0, 0, 0), counts

    # Each prediction is its stamped version's pipeline's.
    import mlflow.sklearn

    pipelines = {version: mlflow.sklearn.load_model(str(registry.versions[version].model_dir)) for version in "12"}
    rides = {f"{record.shard_id}:{record.sequence_number}:0": record for record in read_stream(run.kinesis, run.input)}
    by_version: dict[str, list[tuple[dict[str, Any], Any]]] = defaultdict(list)
    sequence: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for record in read_stream(run.kinesis, run.predictions):
        event = record.event
        source = rides[event["event_id"]]
        by_version[event["version"]].append((event, decode_ride(source.data)))
        sequence[source.shard_id].append((int(source.sequence_number), event["version"]))
    assert set(by_version) == {"1", "2"}  # never the refused version 3
    for version, scored in by_version.items():
        expected = pipelines[version].predict([features(ride) for _, ride in scored])
        got = [event["prediction"]["ride_duration"] for event, _ in scored]
        assert max(abs(g - e) for g, e in zip(got, expected, strict=True)) <= TOLERANCE_MINUTES, version
    differs = pipelines["1"].predict([features(ride) for _, ride in by_version["2"]]) != [
        event["prediction"]["ride_duration"] for event, _ in by_version["2"]
    ]
    assert differs.mean() > 0.9  # the versions really predict differently: the stamps are not interchangeable

    # Per shard, in sequence order: version 1, then 2, then 1 again: one change per move.
    for shard, stamped in sequence.items():
        ordered = [version for _, version in sorted(stamped)]
        runs = [version for index, version in enumerate(ordered) if index == 0 or version != ordered[index - 1]]
        assert runs == ["1", "2", "1"], (shard, runs)

    # The switch: asked within the interval; at most one batch on the old version after the publication.
    figures = {
        "promotion": check_switch(consumer, to_v2, "2", "1", shards, until=back_to_v1),
        "rollback": check_switch(consumer, back_to_v1, "1", "2", shards, until=time.time()),
        "pss_before_switch": pss_before,
        "pss_after_switch": pss_after,
    }
    assert [at(event) >= to_broken for event in events_of(consumer, "model_refused")] == [True]

    # Counted, shown, and ready throughout.
    status, text = http_get(f"{metrics_url}/metrics")
    assert status == 200
    assert 'ride_consumer_model_refused_total{version="3"} 1.0' in text
    assert "\nride_consumer_model_alias_refused 0.0" in text  # the alias has moved back
    for shard in shards:
        assert f'ride_consumer_model_switches_total{{shard_id="{shard}"}} 2.0' in text
        assert f'ride_consumer_shard_model_info{{shard_id="{shard}",version="1"}} 1.0' in text
    assert 'ride_consumer_predicted_duration_minutes_count{version="2"}' in text
    assert readiness.polls > 0 and readiness.failures == [], readiness.failures
    assert consumer.running(), run.tails()
    print(f"\nmodel promotion figures: {figures}")
