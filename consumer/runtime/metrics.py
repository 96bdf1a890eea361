"""The pod's Prometheus exporter, run by the launcher: what one ``/metrics`` request serves.

:func:`scrape_registry` builds a fresh registry with every value in the shard processes' files
(:mod:`consumer.pipeline.meter` writes them, :mod:`consumer.runtime.metricsfolder` reads and compacts them) plus
:class:`LauncherCollector`, the launcher's own metrics (the model, the daemon, readiness) read from a
:class:`LauncherFacts` at each scrape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NotRequired, Protocol, TypedDict

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer.pipeline.meter import BUSY_SINCE, PREFIX
from consumer.runtime.metricsfolder import MetricsFolder

__all__ = [
    "LauncherCollector",
    "LauncherFacts",
    "PreparedModel",
    "busy_processors",
    "scrape_registry",
]


class PreparedModel(TypedDict):
    """The model the launcher prepared, as its metrics and /readyz report it."""

    name: str  # the registered name, "" when the model is not from the registry
    version: str
    uri: str
    model_path: NotRequired[str]  # "onnx" or "sklearn"


class LauncherFacts(Protocol):
    """What the launcher knows and reports (consumer.runtime.health.LauncherState)."""

    @property
    def model(self) -> PreparedModel | None: ...
    @property
    def model_load_seconds(self) -> float | None: ...
    @property
    def model_published_at(self) -> float | None: ...
    @property
    def model_refusals(self) -> dict[str, int]: ...
    @property
    def model_refresh_failures(self) -> int: ...
    @property
    def alias_refused_version(self) -> str | None: ...
    @property
    def daemon_started_at(self) -> float | None: ...
    def daemon_running(self) -> bool: ...
    def ready(self) -> bool: ...


class LauncherCollector(Collector):
    """The launcher's metrics, read from its state at each scrape (no multiprocess files: one launcher per pod)."""

    def __init__(self, facts: LauncherFacts) -> None:
        self._facts = facts

    def collect(self) -> Iterator[Metric]:
        facts = self._facts
        model = facts.model
        info = GaugeMetricFamily(
            f"{PREFIX}_model_info",
            "The model the launcher prepared (value 1): registered name, version (as in the events) and MODEL_URI.",
            labels=["name", "version", "uri"],
        )
        if model is not None:
            info.add_metric([model.get("name") or "", model["version"], model["uri"]], 1)
        yield info
        scoring_path = GaugeMetricFamily(
            f"{PREFIX}_model_path_info",
            "How the shards score (value 1): model_path=onnx (the compiled fast path) or sklearn (the pipeline).",
            labels=["model_path"],
        )
        if model is not None and model.get("model_path"):
            scoring_path.add_metric([model["model_path"]], 1)
        yield scoring_path
        if facts.model_load_seconds is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_model_load_duration_seconds",
                "How long the launcher took to resolve, download, verify and prepare the model.",
                value=facts.model_load_seconds,
            )
        yield from _model_watch(facts)
        yield GaugeMetricFamily(
            f"{PREFIX}_daemon_up", "1 while the KCL MultiLangDaemon runs.", value=1 if facts.daemon_running() else 0
        )
        if facts.daemon_started_at is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_daemon_start_time_seconds",
                "When the daemon was started, in Unix seconds; changes() over a window counts restarts.",
                value=facts.daemon_started_at,
            )
        yield GaugeMetricFamily(
            f"{PREFIX}_ready",
            "1 when /readyz answers 200: model prepared, daemon initialised.",
            value=int(facts.ready()),
        )


def _model_watch(facts: LauncherFacts) -> Iterator[Metric]:
    """What the launcher's watch of the registry alias did (consumer/runtime/modelwatch.py)."""
    if facts.model_published_at is not None:
        yield GaugeMetricFamily(
            f"{PREFIX}_model_published_timestamp_seconds",
            "When the launcher published the model version it serves (at start-up, or after the alias moved).",
            value=facts.model_published_at,
        )
    refused = CounterMetricFamily(
        f"{PREFIX}_model_refused",
        "Versions behind MODEL_URI's alias that failed their preparation and were not served, by version.",
        labels=["version"],
    )
    for version, count in sorted(facts.model_refusals.items()):
        refused.add_metric([version], count)
    yield refused
    yield GaugeMetricFamily(
        f"{PREFIX}_model_alias_refused",
        "1 while MODEL_URI's alias points at a version this pod refused (the version served before stays), else 0.",
        value=int(facts.alias_refused_version is not None),
    )
    yield CounterMetricFamily(
        f"{PREFIX}_model_refresh_failures",
        "Times the launcher could not ask the registry which version MODEL_URI's alias points to.",
        value=facts.model_refresh_failures,
    )


def busy_processors(folder: MetricsFolder) -> dict[str, float]:
    """Shard id -> when its processor started the call it is still inside (Unix seconds), for each live process
    that is busy now. Reads the live processes' busy gauges only."""
    busy: dict[str, float] = {}
    for metric in folder.live_gauges("livemax"):
        if metric.name == BUSY_SINCE:
            for sample in metric.samples:
                if sample.value > 0:
                    busy[sample.labels["shard_id"]] = sample.value
    return busy


class _Collected(Collector):
    """Metrics already read (under the folder's lock), served as they are."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def scrape_registry(folder: MetricsFolder, facts: LauncherFacts | None = None) -> CollectorRegistry:
    """A fresh registry for one scrape: every shard process's values in the folder (the dead ones' included),
    plus the launcher's metrics."""
    registry = CollectorRegistry()
    registry.register(_Collected(folder.collect()))
    if facts is not None:
        registry.register(LauncherCollector(facts))
    return registry
