"""The report: its sections (the JSON's keys, in order), the issue's goals checked against the figures, and the
report as Markdown tables (what ``python -m consumer bench`` prints, and what docs/performance.md shows)."""

from __future__ import annotations

import statistics
from typing import Any

from consumer.tools.bench.per_core import shards_per_core_goals, write_limit_table
from consumer.tools.bench.pod_cpu import pod_cpu_tables, rate_label

__all__ = [
    "SECTIONS",
    "batch_size_table",
    "batch_table",
    "figures_table",
    "format_table",
    "goals",
    "goals_table",
    "machine_line",
    "shards_table",
    "web_table",
]

SECTIONS = (
    "machine",
    "model",
    "lambda_baseline",
    "processor",
    "batch_size",
    "shards",
    "cold_start",
    "daemon",
    "batch",
    "web",
    "goals",
)

#: The issue's goals, checked against the figures (never in tests).
GOAL_RIDES_PER_CORE = 25_000
GOAL_RATIO_TO_LAMBDA = 500
GOAL_P99_MS = 500
GOAL_SHARD_MB = 80
GOAL_FIRST_PREDICTION_SECONDS = 1.5
#: The web endpoint (issue 14 sets no figure): the project's own bar for one ride a request on loopback.
GOAL_WEB_P99_MS = 100


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal's figure, measured value (as shown), target and whether it is met."""
    processor = report["processor"]
    lam = report["lambda_baseline"]
    daemon = report["daemon"].get("fork_server") or next(iter(report["daemon"].values()))
    to_first = list(daemon["initialize_to_first_prediction_seconds"].values())
    lease_to_first = list(daemon["lease_to_first_prediction_seconds"].values())
    agreement = report["model"].get("agreement", {}).get("max_abs_diff_minutes")
    rows = [
        (
            "processor rides per CPU-second, emulator sink (put included)",
            processor["onnx_emulator"]["rides_per_cpu_second"],
            GOAL_RIDES_PER_CORE,
            ">=",
        ),
        (
            "processor rides per CPU-second, null sink",
            processor["onnx_null_sink"]["rides_per_cpu_second"],
            GOAL_RIDES_PER_CORE,
            ">=",
        ),
        (
            "processor / Lambda-style, both writing to the emulator (x)",
            processor["onnx_emulator"]["rides_per_second"] / lam["rides_per_second"],
            GOAL_RATIO_TO_LAMBDA,
            ">=",
        ),
        (
            "processor (null sink) / Lambda-style without its put_record (x)",
            processor["onnx_null_sink"]["rides_per_second"] / lam["rides_per_second_without_put"],
            GOAL_RATIO_TO_LAMBDA,
            ">=",
        ),
        *(
            (
                f"latency put -> prediction p99 at {rate_label(daemon, rate)} (ms, polling 250 ms)",
                latency["p99"],
                GOAL_P99_MS,
                "<=",
            )
            for rate, latency in daemon["latency_ms"].items()
        ),
        ("memory per additional leased shard, USS (MB)", daemon["per_shard"]["uss_mb"], GOAL_SHARD_MB, "<="),
        ("memory per additional leased shard, RSS (MB)", daemon["per_shard"]["rss_mb"], GOAL_SHARD_MB, "<="),
        (
            "new record processor -> first batch written, emulator (s)",
            report["cold_start"]["fork_server_emulator"]["seconds"],
            GOAL_FIRST_PREDICTION_SECONDS,
            "<=",
        ),
        (
            "new record processor -> first batch written, null sink (s)",
            report["cold_start"]["fork_server_null_sink"]["seconds"],
            GOAL_FIRST_PREDICTION_SECONDS,
            "<=",
        ),
        (
            "daemon: lease initialize -> first prediction, worst shard (s)",
            max(to_first) if to_first else None,
            GOAL_FIRST_PREDICTION_SECONDS,
            "<=",
        ),
        (
            "daemon: lease taken -> first prediction, worst shard (s)",
            max(lease_to_first) if lease_to_first else None,
            GOAL_FIRST_PREDICTION_SECONDS,
            "<=",
        ),
        ("compiled vs sklearn on the held-out week, max abs diff (minutes)", agreement, 1e-3, "<="),
        *shards_per_core_goals(report),
        *_serving_goals(report),
    ]
    checked = []
    for figure, value, target, direction in rows:
        met = value is not None and (value >= target if direction == ">=" else value <= target)
        shown = None if value is None else _shown(value)
        checked.append({"figure": figure, "value": shown, "goal": f"{direction} {target:,g}", "met": met})
    return checked


def _serving_goals(report: dict[str, Any]) -> list[tuple[str, float | None, float, str]]:
    """The batch command's rows per CPU-second (the stream's goal per core) and the endpoint's p99 and answers."""
    web = report["web"]["fixed_rate"]
    return [
        (
            "batch command (`score`) rows per CPU-second",
            report["batch"]["rows_per_cpu_second"],
            GOAL_RIDES_PER_CORE,
            ">=",
        ),
        *(
            (
                f"web endpoint p99 at {rate} requests/s, one ride each (ms)",
                phase["latency_ms"]["p99"],
                GOAL_WEB_P99_MS,
                "<=",
            )
            for rate, phase in web.items()
        ),
        (
            "web endpoint: share of requests answered 200 at the fixed rates",
            min(p["success"] for p in web.values()),
            1,
            ">=",
        ),
    ]


def _shown(value: float) -> float:
    """A figure for the goals table: whole numbers from 10 up, two decimals below, two digits under 0.01."""
    if abs(value) >= 10:
        return round(value)
    if abs(value) >= 0.01:
        return round(value, 2)
    return float(f"{value:.2g}")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def figures_table(report: dict[str, Any]) -> list[str]:
    """The main table: the Lambda-style baseline, the processor, the daemon, cold starts, the model."""
    lines = ["| Figure | Value |", "|---|---|"]
    lam = report["lambda_baseline"]
    lines.append(
        f"| Lambda-style (pyfunc predict + put_record per ride) | {_rate(lam['rides_per_second'])} rides/s; "
        f"{_rate(lam['rides_per_second_without_put'])} without the put_record ({lam['predict_ms_per_ride']:.1f} ms "
        f"per predict, {lam['put_record_ms']:.1f} ms per put_record) |"
    )
    seed = lam.get("seed_n_jobs_all_cores")
    if seed:
        lines.append(
            f"| Lambda-style with the seed's n_jobs=-1 forest (reference) | {_rate(seed['rides_per_second'])} "
            f"rides/s ({seed['predict_ms_per_ride']:.1f} ms per predict) |"
        )
    proc = report["processor"]
    for name, label in (
        ("onnx_null_sink", "processor, ONNX, null sink"),
        ("onnx_emulator", "processor, ONNX, emulator sink"),
        ("sklearn_null_sink", "processor, sklearn pipeline, null sink"),
        ("sklearn_emulator", "processor, sklearn pipeline, emulator sink"),
    ):
        row = proc[name]
        null = "null" in name
        baseline = lam["rides_per_second_without_put"] if null else lam["rides_per_second"]
        versus = "x Lambda without its put" if null else "x Lambda"
        lines.append(
            f"| {label} | {_rate(row['rides_per_second'])} rides/s, {_rate(row['rides_per_cpu_second'])} per "
            f"CPU-second ({row['rides_per_second'] / baseline:,.0f}{versus}) |"
        )
    for mode, run in report["daemon"].items():
        lines += _daemon_rows(mode, run)
    for key, cold in report["cold_start"].items():
        if not isinstance(cold, dict):
            continue
        sink = key.split("_")[-1] if not key.endswith("null_sink") else "null sink"
        label = "plain process" if "plain" in key else "fork server"
        lines.append(
            f"| new record processor ({label}, {sink}) -> first 100 predictions written | "
            f"{cold['seconds']:.2f} s (initialized after {cold['start_to_initialized_seconds']:.2f} s) |"
        )
    model = report["model"]
    if "agreement" in model:
        agreement = model["agreement"]
        lines.append(
            f"| compiled model vs pipeline, {agreement['rides']:,} held-out rides | max abs diff "
            f"{agreement['max_abs_diff_minutes']:.2g} min ({model['used_features']} of "
            f"{model['vectorizer_features']} features) |"
        )
    return lines


def _daemon_rows(mode: str, run: dict[str, Any]) -> list[str]:
    lines = []
    shard = run["per_shard"]
    mem = run["memory"]
    for rate, latency in run["latency_ms"].items():
        busy = run["cpu_cores_busy_while_producing"].get(rate, {})
        lines.append(
            f"| daemon ({mode}): latency put -> prediction at {rate_label(run, rate)} | p50 {latency['p50']:.0f} ms, "
            f"p90 {latency['p90']:.0f} ms, p99 {latency['p99']:.0f} ms, max {latency['max']:.0f} ms "
            f"({latency['count']} rides); CPU cores busy: kinesis-local {busy.get('kinesis-local', 0):.2f}, "
            f"the consumer's processes {busy.get('consumer', 0):.2f} |"
        )
    lines.append(
        f"| daemon ({mode}): per additional shard | USS {shard['uss_mb']} MB, PSS {shard['pss_mb']} MB, "
        f"RSS {shard['rss_mb']} MB |"
    )
    server = mem["fork_server"]
    lines.append(
        f"| daemon ({mode}): other processes (RSS / USS) | daemon (java) {mem['daemon']['rss_mb']} / "
        f"{mem['daemon']['uss_mb']} MB, launcher {mem['launcher']['rss_mb']} / {mem['launcher']['uss_mb']} MB"
        + (f", fork server {server['rss_mb']} / {server['uss_mb']} MB |" if server else " |")
    )
    for key, label in (
        ("lease_to_shard_consumer_seconds", "lease taken -> shard consumer created (daemon)"),
        ("lease_to_initialize_sent_seconds", "lease taken -> initialize task started (daemon)"),
        ("initialize_sent_to_initialized_seconds", "initialize task started -> answered (processor start)"),
        ("lease_to_initialize_seconds", "lease taken -> initialize answered"),
        ("initialize_to_first_prediction_seconds", "initialize -> first prediction"),
        ("lease_to_first_prediction_seconds", "lease taken -> first prediction"),
    ):
        values = list(run[key].values())
        if values:
            lines.append(
                f"| daemon ({mode}): {label} | median {statistics.median(values):.2f} s, worst "
                f"{max(values):.2f} s ({len(values)} shards) |"
            )
    return lines


def batch_size_table(report: dict[str, Any]) -> list[str]:
    lines = ["| maxRecords | rides/s | per CPU-second |", "|---|---|---|"]
    for row in report["batch_size"]:
        lines.append(
            f"| {row['max_records']:,} | {_rate(row['rides_per_second'])} | {_rate(row['rides_per_cpu_second'])} |"
        )
    return lines


def shards_table(report: dict[str, Any]) -> list[str]:
    lines = ["| shards (processors side by side) | rides/s in all | per shard |", "|---|---|---|"]
    for row in report["shards"]:
        lines.append(
            f"| {row['shards']} | {_rate(row['rides_per_second'])} | {_rate(row['rides_per_second_per_shard'])} |"
        )
    return lines


def batch_table(report: dict[str, Any]) -> list[str]:
    """``score`` on the month file and on its rows repeated."""
    lines = ["| file | rows | rows/s | per CPU-second | peak RSS of the command |", "|---|---|---|---|---|"]
    for size in report["batch"]["sizes"].values():
        lines.append(
            f"| the month x{size['repeats']} | {size['rows']:,} | {_rate(size['rows_per_second'])} | "
            f"{_rate(size['rows_per_cpu_second'])} | {size['peak_rss_mb']:.0f} MB |"
        )
    return lines


def web_table(report: dict[str, Any]) -> list[str]:
    """``serve`` under vegeta: each fixed rate, lists of rides, the ceiling."""
    web = report["web"]
    lines = [
        "| load | requests/s | 200s | p50 | p90 | p99 | max | server CPU (cores) | requests per CPU-second |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    phases = [(f"{rate}/s, one ride each", phase) for rate, phase in web["fixed_rate"].items()]
    lists = web["lists"]
    phases.append((f"{lists['rate']}/s, lists of {lists['rides_per_request']} rides", lists))
    phases.append((f"as fast as {web['ceiling']['connections']} connections go", web["ceiling"]))
    for label, phase in phases:
        latency = phase["latency_ms"]
        lines.append(
            f"| {label} | {phase['throughput']:,.0f} | {phase['success']:.1%} | {latency['p50']:.1f} ms | "
            f"{latency['p90']:.1f} ms | {latency['p99']:.1f} ms | {latency['max']:.1f} ms | "
            f"{phase['server_cpu_cores']:.2f} | {_rate(phase['requests_per_cpu_second'])} |"
        )
    memory = web["memory"]
    workers = ", ".join(f"{worker['rss_mb']:.0f} / {worker['uss_mb']:.0f} MB" for worker in memory["workers"])
    lines.append(
        f"| memory (RSS / USS) | server {memory['server']['rss_mb']:.0f} / {memory['server']['uss_mb']:.0f} MB; "
        f"workers {workers} | | | | | | | |"
    )
    return lines


def goals_table(report: dict[str, Any]) -> list[str]:
    lines = ["| Goal | Measured | Target | Met |", "|---|---|---|---|"]
    for goal in report["goals"]:
        value = goal["value"]
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        lines.append(f"| {goal['figure']} | {shown} | {goal['goal']} | {'yes' if goal['met'] else 'no'} |")
    return lines


def machine_line(report: dict[str, Any]) -> str:
    """The machine and its load, the kind of run, how long it took."""
    machine = report["machine"]
    return (
        f"{machine['cpus']} CPUs, load average {machine['load_before'][0]:.2f} before and "
        f"{machine['load_after'][0]:.2f} after; {'quick' if machine['quick'] else 'full'} run, medians of "
        f"{machine['runs']} run(s); {machine['seconds']:.0f} s in all."
    )


def format_table(report: dict[str, Any]) -> str:
    """The report as Markdown tables: the figures, batch sizes, shards, the goals, and the machine line."""
    lines = [
        *figures_table(report),
        "",
        *batch_size_table(report),
        "",
        *shards_table(report),
        "",
        *pod_cpu_tables(report),
        "",
        *write_limit_table(report),
        "",
        *batch_table(report),
        "",
        *web_table(report),
        "",
        *goals_table(report),
        "",
        machine_line(report),
    ]
    return "\n".join(lines)
