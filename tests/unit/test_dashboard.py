"""The Grafana dashboard: the committed JSON is what dashboards/build.py builds, its layout is sound, and every
query is PromQL that reads metrics the consumer defines (tests/e2e checks them against a real scrape)."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from consumer.tools.paths import REPO_ROOT
from tests.support.prometheus import dashboard_builder, defined_metric_names, metric_names

builder = dashboard_builder()
DOCUMENT = json.loads(builder.OUTPUT.read_text())
PANELS = [panel for panel in DOCUMENT["panels"] if panel["type"] != "row"]


def test_the_committed_json_is_what_the_builder_writes():
    assert builder.OUTPUT.read_text() == builder.render(), "run: .venv/bin/python dashboards/build.py"


def test_panels_have_unique_ids_and_do_not_overlap_on_the_24_column_grid():
    ids = [panel["id"] for panel in DOCUMENT["panels"]]
    assert len(ids) == len(set(ids))
    boxes = [panel["gridPos"] for panel in DOCUMENT["panels"]]
    assert all(box["x"] >= 0 and box["x"] + box["w"] <= 24 for box in boxes)
    for a, b in itertools.combinations(boxes, 2):
        apart = (
            a["x"] + a["w"] <= b["x"]
            or b["x"] + b["w"] <= a["x"]
            or a["y"] + a["h"] <= b["y"]
            or b["y"] + b["h"] <= a["y"]
        )
        assert apart, (a, b)


def test_every_panel_queries_the_chosen_prometheus():
    for panel in PANELS:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"] for target in panel["targets"]), panel["title"]


@pytest.mark.parametrize("expr", builder.queries(DOCUMENT))
def test_every_query_is_promql_on_metrics_the_consumer_defines(expr):
    names = metric_names(expr, builder.QUERY_VARIABLES)
    assert names, "a query that reads no metric"
    assert names <= defined_metric_names(), names - defined_metric_names()


def test_the_pod_picker_lists_pods_by_a_metric_every_pod_exports():
    [variable] = [item for item in DOCUMENT["templating"]["list"] if item["name"] == "instance"]
    [metric] = re.findall(r"label_values\((\w+), instance\)", variable["query"])
    assert metric in defined_metric_names()


def test_the_dashboard_shows_lag_throughput_dead_letters_latencies_checkpoints_leases_and_model():
    titles = {panel["title"] for panel in PANELS}
    assert {
        "Seconds behind latest, per shard",
        "Records per second, in and out",
        "Dead letters by reason, unusual rides by kind",
        "Scoring latency",
        "Put latency, by stream",
        "Checkpoints per second",
        "Leases per pod",
        "Model version",
    } <= titles


def test_the_operating_guide_metric_table_lists_every_metric_the_consumer_defines():
    guide = (REPO_ROOT / "docs" / "operating.md").read_text()
    table = set(re.findall(r"^\| `(ride_consumer_\w+)` \|", guide, flags=re.MULTILINE))
    defined = {re.sub(r"_(bucket|count|sum)$", "", name) for name in defined_metric_names()}
    assert table == defined
