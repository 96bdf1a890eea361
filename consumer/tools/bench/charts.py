"""The benchmark's charts, drawn from a report: the latency distribution on the daemon, the pod's CPU by process,
and its memory by process. PNGs (they diff as binaries, but stay small) drawn with matplotlib's Agg canvas, no
pyplot and no global state: beside the report by ``python -m consumer bench``, and in docs/img/ by ``make
bench-docs``, which docs/performance.md links."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from consumer.tools.bench.accounting import ROLE_LABELS, ROLES
from consumer.tools.bench.per_core import shard_cost_by_role
from consumer.tools.bench.pod_cpu import CPU_ROLE_LABELS, CPU_ROLES, rate_label

__all__ = ["CHARTS", "charts_of", "draw_charts"]

#: Each chart's name (the file is ``<prefix>-<name>.png``) and what it shows (the page's alt text).
CHARTS = {
    "latency": "Latency from put to prediction on the daemon, share of rides under each latency, per rate and mode",
    "cpu": "The pod's CPU by process: idle and at each rate put, and one shard at the write limit",
    "memory": "The pod's memory by process (PSS), with the fork server and with plain processes",
}

_SIZE = (7.5, 3.6)
_DPI = 90


def _figure() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    # No software version or date in the file: the same report draws the same bytes.
    figure.savefig(path, format="png", metadata={"Software": None})
    return path


def _latency(report: dict[str, Any], path: Path) -> Path:
    figure = _figure()
    axes = figure.add_subplot()
    for mode, run in report["daemon"].items():
        for rate, curve in run["latency_percentiles_ms"].items():
            if curve:
                style = "-" if mode == "fork_server" else "--"
                axes.plot(curve, [p / 100 for p in range(len(curve))], style, label=f"{mode}, {rate_label(run, rate)}")
    axes.set_xscale("log")
    axes.set_xlabel("put -> prediction (ms, log scale)")
    axes.set_ylabel("share of rides")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    axes.set_title("Latency on the daemon (polling every 250 ms)", fontsize="medium")
    return _save(figure, path)


def _stacked(
    axes: Any,
    labels: list[str],
    by_role: list[dict[str, float]],
    roles: tuple[str, ...],
    role_labels: dict[str, str],
) -> None:
    bottoms = [0.0] * len(labels)
    for role in roles:
        values = [figures.get(role, 0.0) for figures in by_role]
        axes.bar(labels, values, bottom=bottoms, label=role_labels[role])
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes.tick_params(axis="x", labelsize="small")


def _cpu(report: dict[str, Any], path: Path) -> Path:
    """Left: the pod's CPU per second by process, idle and at each rate put (the fork server's run, as in
    production). Right: what one shard at the write limit costs by process, from the write-limit run."""
    figure = _figure()
    rates_axes, shard_axes = figure.subplots(1, 2, width_ratios=(3, 1))
    run = report["daemon"].get("fork_server") or next(iter(report["daemon"].values()))
    cpu = run["pod_cpu"]
    labels = ["idle"] + [f"{cpu['rates'][str(p['rate'])]['rides_per_second']:,.0f}/s" for p in cpu["phases"]]
    figures = [cpu["idle"]["ms_per_second"]] + [cpu["rates"][str(p["rate"])]["ms_per_second"] for p in cpu["phases"]]
    _stacked(rates_axes, labels, figures, CPU_ROLES, CPU_ROLE_LABELS)
    rates_axes.set_xlabel(f"rides per second put ({cpu['shards']} shards, polled every 250 ms)")
    rates_axes.set_ylabel("ms of CPU per second")
    rates_axes.set_title("the pod, by rate", fontsize="medium")
    rates_axes.legend(fontsize="x-small")
    limit = run.get("write_limit")
    if limit is not None:
        idle, rides = shard_cost_by_role(
            limit["idle"]["ms_per_second"],
            limit["ms_per_1000_rides_above_idle_with_put"],
            limit["shards"],
            daemon_fixed_ms_per_second=limit.get("daemon_idle_split", {}).get("fixed_ms_per_second", 0.0),
        )
        per_role = {role: idle[role] + rides[role] for role in CPU_ROLES}
        _stacked(shard_axes, [f"{limit['write_limit_per_shard']:,} rides/s"], [per_role], CPU_ROLES, CPU_ROLE_LABELS)
        shard_axes.set_ylabel("ms of CPU per second")
        warmed = limit["shards_per_core"]["shards_per_core"]
        measured = limit.get("shards_per_core_jit_included", {}).get("shards_per_core", warmed)
        shard_axes.set_title(
            f"one shard at the limit:\n{warmed:.0f} per core warmed,\n{measured:.0f} with the JIT", fontsize="medium"
        )
    return _save(figure, path)


def _memory(report: dict[str, Any], path: Path) -> Path:
    figure = _figure()
    axes = figure.add_subplot()
    labels, figures = [], []
    for mode, run in report["daemon"].items():
        memory = run["memory"]
        row = {}
        for role in ROLES:
            value = memory.get(role)
            rows = value if isinstance(value, list) else [value] if value else []
            row[role] = sum(item["pss_mb"] for item in rows)
        labels.append(f"{mode} ({len(memory['record_processors'])} shards)")
        figures.append(row)
    _stacked(axes, labels, figures, ROLES, ROLE_LABELS)
    axes.set_ylabel("PSS (MB)")
    axes.set_title("The pod's memory by process, PSS (shared pages split between processes)", fontsize="medium")
    axes.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(figure, path)


def charts_of(report: dict[str, Any]) -> list[str]:
    """The charts of :data:`CHARTS` that ``report`` has the figures for (a report older than a chart lacks them)."""
    needs = {"latency": "latency_percentiles_ms", "cpu": "pod_cpu", "memory": "memory"}
    return [name for name in CHARTS if all(needs[name] in run for run in report["daemon"].values())]


def draw_charts(report: dict[str, Any], directory: Path, prefix: str) -> list[Path]:
    """Draw each chart of :func:`charts_of` ``report`` as ``directory``/``prefix``-<name>.png; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    draw = {"latency": _latency, "cpu": _cpu, "memory": _memory}
    return [draw[name](report, directory / f"{prefix}-{name}.png") for name in charts_of(report)]
