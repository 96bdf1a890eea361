"""Build the Grafana dashboard of the ride-duration consumer with grafana-foundation-sdk and write it as JSON.

    .venv/bin/python dashboards/build.py          # (re)writes dashboards/ride-consumer.json

The JSON is committed, so it can be imported into Grafana (Dashboards > New > Import) or provisioned from a file;
a test checks that it equals what this script builds, and the end-to-end test that every metric its queries
name is one the consumer exports and that every query returns data from a real run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import Dashboard, DataSourceRef, VariableRefresh, VariableSort

__all__ = ["OUTPUT", "QUERY_VARIABLES", "build", "layout", "queries", "render"]

OUTPUT = Path(__file__).resolve().parent / "ride-consumer.json"
UID = "ride-duration-consumer"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The pods to show: a regex of Prometheus `instance` labels (all by default).
POD = 'instance=~"$instance"'
#: What the Grafana variables in the queries stand for when a test sends them to Prometheus directly.
QUERY_VARIABLES = {"$__rate_interval": "15s", "$instance": ".*"}


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range().datasource(DATASOURCE)


def rate(metric: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{POD}}}[$__rate_interval]))"


def quantiles(metric: str, by: str = "", legend_prefix: str = "") -> list[prometheus.Dataquery]:
    grouping = f"le, {by}" if by else "le"
    return [
        query(
            f"histogram_quantile({q}, sum by ({grouping}) (rate({metric}_bucket{{{POD}}}[$__rate_interval])))",
            f"{legend_prefix}p{int(q * 100)}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))
    ]


def series(title: str, description: str, unit: str, targets: list[prometheus.Dataquery], width: int = 12):
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .line_width(1)
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def single(title: str, description: str, unit: str, targets: list[prometheus.Dataquery], *, names: bool = False):
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(6)
        .height(4)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.NONE)
        .text_mode(common.BigValueTextMode.NAME if names else common.BigValueTextMode.VALUE_AND_NAME)
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def build() -> Dashboard:
    """The dashboard model, its panels and rows numbered from 1 in order."""
    built = layout().build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return built


def layout() -> dashboard.Dashboard:
    m = "ride_consumer_"
    return (
        dashboard.Dashboard("Ride-duration consumer")
        .uid(UID)
        .description("Kinesis ride events scored by the KCL consumer: lag, throughput, dead letters, latency.")
        .tags(["kinesis", "kcl", "ride-duration"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("instance")
            .label("Pod")
            .datasource(DATASOURCE)
            .query(f"label_values({m}daemon_up, instance)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        # --- Is it keeping up? --------------------------------------------------------------------------------
        .with_row(dashboard.Row("Keeping up"))
        .with_panel(
            series(
                "Seconds behind latest, per shard",
                "millisBehindLatest of each shard's last batch: how far the consumer is from the tip of the stream.",
                "s",
                [query(f"max by (shard_id) ({m}seconds_behind_latest{{{POD}}})", "{{shard_id}}")],
            )
        )
        .with_panel(
            series(
                "Age of the newest processed record",
                "Now minus the arrival time of the newest record each shard has processed (grows on an idle shard).",
                "s",
                [query(f"time() - max by (shard_id) ({m}newest_record_timestamp_seconds{{{POD}}})", "{{shard_id}}")],
            )
        )
        # --- Is it scoring? -----------------------------------------------------------------------------------
        .with_row(dashboard.Row("Scoring"))
        .with_panel(
            series(
                "Records per second, in and out",
                "In: records delivered to the processors. Out: prediction events and dead-letter events written.",
                "cps",
                [
                    query(rate(f"{m}records_received_total"), "in", "A"),
                    query(rate(f"{m}predictions_written_total"), "predictions", "B"),
                    query(rate(f"{m}dead_letters_total"), "dead letters", "C"),
                ],
            )
        )
        .with_panel(
            series(
                "Dead letters by reason, unusual rides by kind",
                "Records set aside on the dead-letter stream, by the reason in their event; and rides scored although "
                "a value is unusual (over 1,000 miles, a negative distance, a zone id outside 1..265), by kind.",
                "cps",
                [
                    query(rate(f"{m}dead_letters_total", "reason"), "{{reason}}", "A"),
                    query(rate(f"{m}unusual_rides_total", "kind"), "unusual: {{kind}}", "B"),
                ],
            )
        )
        .with_panel(
            series(
                "Errors",
                "Batches that stopped their shard (a broken model among them), puts that gave up, and entries "
                "PutRecords had to resend.",
                "cps",
                [
                    query(rate(f"{m}batch_failures_total", "shard_id"), "batch failures {{shard_id}}", "A"),
                    query(rate(f"{m}put_failures_total", "sink"), "put failures {{sink}}", "B"),
                    query(rate(f"{m}put_entries_retried_total", "sink"), "retried entries {{sink}}", "C"),
                    query(rate(f"{m}model_broken_total", "shard_id"), "model broken {{shard_id}}", "D"),
                ],
            )
        )
        .with_panel(
            series(
                "Batch size",
                "Records per processRecords call (up to KCL_MAX_RECORDS).",
                "short",
                quantiles(f"{m}batch_size_records"),
            )
        )
        # --- How fast? ----------------------------------------------------------------------------------------
        .with_row(dashboard.Row("Latency"))
        .with_panel(
            series(
                "Scoring latency",
                "The model's predict call on one batch (bisection on model errors included).",
                "s",
                quantiles(f"{m}scoring_duration_seconds"),
                width=8,
            )
        )
        .with_panel(
            series(
                "Put latency, by stream",
                "Writing one batch's events to a stream: every PutRecords call, retries and backoff included.",
                "s",
                quantiles(f"{m}put_duration_seconds", "sink", "{{sink}} "),
                width=8,
            )
        )
        .with_panel(
            series(
                "Batch latency",
                "One batch from delivery to checkpoint.",
                "s",
                quantiles(f"{m}batch_duration_seconds"),
                width=8,
            )
        )
        # --- Model versions: a promotion or a rollback as it happens ------------------------------------------
        .with_row(dashboard.Row("Model versions"))
        .with_panel(
            series(
                "Predicted duration by model version",
                "Median and 90th percentile of the predicted ride durations, per model version: a new version's "
                "predictions beside the old one's, so a promotion that predicts very differently shows at once.",
                "m",
                [
                    query(
                        f"histogram_quantile({q}, sum by (le, version) "
                        f"(rate({m}predicted_duration_minutes_bucket{{{POD}}}[$__rate_interval])))",
                        f"p{int(q * 100)} version {{{{version}}}}",
                        ref,
                    )
                    for q, ref in ((0.5, "A"), (0.9, "B"))
                ],
                width=8,
            )
        )
        .with_panel(
            series(
                "Shards per model version",
                "How many shards score with each version: during a promotion every shard moves at its next batch.",
                "short",
                [query(f"count by (version) ({m}shard_model_info{{{POD}}} == 1)", "version {{version}}")],
                width=8,
            )
        )
        .with_panel(
            series(
                "Switches and refusals",
                "Shards switching version per second, and 1 for a pod whose alias points at a version it refused "
                "(failed preparation: the previous version keeps serving; the RideConsumerModelRefused alert).",
                "short",
                [
                    query(rate(f"{m}model_switches_total"), "switches/s", "A"),
                    query(f"max by (instance) ({m}model_alias_refused{{{POD}}})", "refusing: {{instance}}", "B"),
                ],
                width=8,
            )
        )
        # --- Checkpoints, leases, model, daemon --------------------------------------------------------------
        .with_row(dashboard.Row("Checkpoints, leases and health"))
        .with_panel(
            series(
                "Checkpoints per second",
                "Checkpoints the daemon confirmed, and failed ones by the daemon's exception.",
                "cps",
                [
                    query(rate(f"{m}checkpoints_total"), "checkpoints", "A"),
                    query(rate(f"{m}checkpoint_failures_total", "error"), "failed: {{error}}", "B"),
                ],
            )
        )
        .with_panel(
            series(
                "Leases per pod",
                "Shards whose lease each pod holds.",
                "short",
                [query(f"sum by (instance) ({m}leases_held{{{POD}}})", "{{instance}}")],
            )
        )
        .with_panel(
            single(
                "Model version",
                "The model each pod prepared: registered name, version (as in the prediction events) and MODEL_URI.",
                "none",
                [
                    query(
                        f"max by (name, version, uri) ({m}model_info{{{POD}}})",
                        "{{name}} version {{version}} ({{uri}})",
                    )
                ],
                names=True,
            )
        )
        .with_panel(
            single(
                "Model load time",
                "How long the launcher took to resolve, download, verify and prepare the model, per pod.",
                "s",
                [query(f"max by (instance) ({m}model_load_duration_seconds{{{POD}}})", "{{instance}}")],
            )
        )
        .with_panel(
            single(
                "Daemons up / ready",
                "Pods whose KCL daemon runs, and pods that answer /readyz with 200.",
                "short",
                [
                    query(f"sum({m}daemon_up{{{POD}}})", "up", "A"),
                    query(f"sum({m}ready{{{POD}}})", "ready", "B"),
                ],
            )
        )
        .with_panel(
            single(
                "Daemon restarts (1 h)",
                "Starts of the daemon beyond the first, over the last hour, all pods together.",
                "short",
                [query(f"sum(changes({m}daemon_start_time_seconds{{{POD}}}[1h]))", "restarts")],
            )
        )
    )


def render() -> str:
    """The dashboard as the JSON text this script writes."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def queries(document: dict) -> list[str]:
    """Every PromQL expression of a dashboard's panels (its JSON)."""
    return [target["expr"] for panel in document.get("panels", []) for target in panel.get("targets", [])]


def main() -> int:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT} ({len(queries(json.loads(OUTPUT.read_text())))} queries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
