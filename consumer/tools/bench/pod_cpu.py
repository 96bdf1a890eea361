"""The pod's CPU by process: user plus system CPU-seconds of each process of the pod (utime and stime of
/proc/<pid>/stat, read through psutil) over measured windows: an idle one (the leases held, no rides put), one per
rate the benchmark puts on the input stream, from the first put until the last prediction is out, and the
write-limit run's backlog (:mod:`~consumer.tools.bench.limit`).

The daemon's JIT compiler threads are counted apart from the rest of the daemon (role ``jit``): the JVM compiles
its hot code for minutes after it starts, and a few minutes of the benchmark are all warm-up to it. A pod that has
run for a while no longer pays that; the shards per core are therefore given for a warmed JVM, the compilation left
out, and as measured, the compilation in.

From them, what 1,000 rides cost each process above its idle cost, and from the write-limit run how many shards at
AWS's write limit one core keeps up with (:func:`shards_per_core`, whose formula docs/performance.md states)."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import psutil

from consumer.tools.bench.accounting import ROLE_LABELS, ROLES, cpu_seconds, jit_threads_cpu_seconds, pod_processes

__all__ = [
    "CPU_ROLES",
    "CPU_ROLE_LABELS",
    "SHARD_WRITE_LIMIT",
    "SUSTAINED_DRAIN_SECONDS",
    "PodCpu",
    "pod_cpu_goals",
    "pod_cpu_summary",
    "pod_cpu_tables",
    "put_cost",
    "rate_label",
    "shards_per_core",
    "sustained",
    "write_limit_summary",
]

#: Records per second one Kinesis shard accepts (AWS's write limit): the most a leased shard can bring.
SHARD_WRITE_LIMIT = 1_000

#: The issue's goal: shards at the write limit one core keeps up with, the daemon's CPU included.
GOAL_SHARDS_PER_CORE = 16

#: How soon after the last put the last prediction must be out for a rate to count as sustained.
SUSTAINED_DRAIN_SECONDS = 5.0

#: The roles a pod pays for whatever its shard count (the rest is counted per leased shard).
_FIXED_ROLES = ("launcher", "fork_server")

#: The pod's CPU by role: the processes' roles, with the daemon's JIT compiler threads (``jit``) apart from the
#: rest of the daemon (``daemon``).
CPU_ROLES = ("launcher", "daemon", "jit", "fork_server", "record_processors", "workers")
CPU_ROLE_LABELS = {**ROLE_LABELS, "daemon": "daemon (java), JIT apart", "jit": "JIT compiler (java)"}

#: The roles a warmed JVM still pays for: all but the compilation.
_WARM_ROLES = tuple(role for role in CPU_ROLES if role != "jit")


class PodCpu:
    """CPU-seconds each process of the pod uses from now to :meth:`window`, summed by role, the daemon's JIT
    compiler threads apart (:data:`CPU_ROLES`). A process that starts meanwhile counts from its start; one that ends
    meanwhile is lost (the windows keep the same processes). A compiler thread that ends meanwhile leaves its CPU in
    the window to the daemon: the daemon's figure without the JIT errs high."""

    def __init__(self, launcher_pid: int) -> None:
        self._launcher_pid = launcher_pid
        self._started = time.monotonic()
        self._before, self._jit_before = self._sample()

    def _sample(self) -> tuple[dict[int, tuple[str, float]], dict[int, float]]:
        sample, jit = {}, {}
        for role, processes in pod_processes(self._launcher_pid).items():
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    sample[process.pid] = (role, cpu_seconds(process))
                    if role == "daemon":
                        jit.update(jit_threads_cpu_seconds(process))
        return sample, jit

    def window(self, rides: int) -> dict[str, Any]:
        """The window so far: its length, the rides put in it, the processes and CPU-seconds of each role."""
        after, jit_after = self._sample()
        seconds = time.monotonic() - self._started
        cpu = dict.fromkeys(CPU_ROLES, 0.0)
        processes = dict.fromkeys(ROLES, 0)
        for pid, (role, used) in after.items():
            cpu[role] += used - self._before.get(pid, (role, 0.0))[1]
            processes[role] += 1
        cpu["jit"] = sum(used - self._jit_before.get(tid, 0.0) for tid, used in jit_after.items())
        cpu["daemon"] -= cpu["jit"]
        return {
            "seconds": round(seconds, 3),
            "rides": rides,
            "processes": processes,
            "cpu_seconds": {role: round(value, 3) for role, value in cpu.items()},
        }


def _idle_figures(window: dict[str, Any]) -> dict[str, Any]:
    cores = {role: used / window["seconds"] for role, used in window["cpu_seconds"].items()}
    return {**window, "ms_per_second": _rounded({role: 1000 * value for role, value in cores.items()})}


def _rate_figures(window: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    """A rate's window: CPU per 1,000 rides of each role, idle included and above the role's idle cost."""
    rides, seconds = window["rides"], window["seconds"]
    used = window["cpu_seconds"]
    idle_rate = {role: value / 1000 for role, value in idle["ms_per_second"].items()}
    return {
        **window,
        "rides_per_second": round(rides / seconds, 1),
        "ms_per_second": _rounded({role: 1000 * value / seconds for role, value in used.items()}),
        "ms_per_1000_rides": _rounded({role: 1e6 * value / rides for role, value in used.items()}),
        "ms_per_1000_rides_above_idle": _rounded(
            {role: 1e6 * (value - idle_rate[role] * seconds) / rides for role, value in used.items()}
        ),
    }


def _rounded(by_role: dict[str, float]) -> dict[str, float]:
    figures = {role: round(value, 2) for role, value in by_role.items()}
    figures["pod"] = round(sum(by_role.values()), 2)
    return figures


def shards_per_core(
    idle_ms_per_second: dict[str, float],
    above_idle_ms_per_1000: dict[str, float],
    shards: int,
    roles: tuple[str, ...] = _WARM_ROLES,
) -> dict[str, Any]:
    """How many shards at :data:`SHARD_WRITE_LIMIT` one core keeps up with, and the daemon's share of a shard's cost,
    counting the CPU of ``roles`` (by default a warmed JVM's: all but the JIT's compilation).

    ``N = (1000 - F) / (I / S + C * L / 1000)`` with every term in ms of CPU per second (1,000 = one core): F the
    pod's fixed idle cost (the launcher and the fork server), I the idle cost of what scales with shards (the
    daemon's polling and leases, the record processors, the workers) measured with S shards leased, C the pod's CPU
    per 1,000 rides above idle and L the write limit (1,000 rides/s)."""
    fixed = sum(idle_ms_per_second.get(role, 0.0) for role in roles if role in _FIXED_ROLES)
    idle_per_shard = sum(idle_ms_per_second.get(role, 0.0) for role in roles if role not in _FIXED_ROLES) / shards
    rides_per_shard = sum(above_idle_ms_per_1000.get(role, 0.0) for role in roles) * SHARD_WRITE_LIMIT / 1000
    per_shard = idle_per_shard + rides_per_shard
    daemon_roles = [role for role in roles if role in ("daemon", "jit")]
    daemon = sum(
        idle_ms_per_second.get(role, 0.0) / shards + above_idle_ms_per_1000.get(role, 0.0) * SHARD_WRITE_LIMIT / 1000
        for role in daemon_roles
    )
    return {
        "pod_fixed_ms_per_second": round(fixed, 2),
        "shard_idle_ms_per_second": round(idle_per_shard, 2),
        "shard_rides_ms_per_second": round(rides_per_shard, 2),
        "shard_ms_per_second": round(per_shard, 2),
        "shards_per_core": round((1000 - fixed) / per_shard, 1),
        "daemon_share_of_a_shard": round(daemon / per_shard, 3),
    }


def pod_cpu_summary(
    shards: int, idle: dict[str, Any], rates: dict[int, dict[str, Any]], phases: list[dict[str, Any]]
) -> dict[str, Any]:
    """The **pod_cpu** figures of a daemon run: the idle window, each rate's window, whether each rate was
    sustained, and the highest one that was."""
    idle_figures = _idle_figures(idle)
    kept = [phase["rate"] for phase in phases if phase["sustained"]]
    return {
        "shards": shards,
        "idle": idle_figures,
        "rates": {str(rate): _rate_figures(window, idle_figures) for rate, window in rates.items()},
        "phases": phases,
        "highest_rate_sustained": max(kept) if kept else None,
    }


def put_cost(processor: dict[str, Any]) -> float:
    """ms of CPU per 1,000 rides that writing the predictions to the stream adds to a record processor: the
    processor section's figure per CPU-second with the emulator as its sink, less its figure with the null sink
    (both in batches of 1,000, the production size)."""
    with_put = processor["onnx_emulator"]["rides_per_cpu_second"]
    without = processor["onnx_null_sink"]["rides_per_cpu_second"]
    return round(1e6 / with_put - 1e6 / without, 2)


def write_limit_summary(
    shards: int, idle: dict[str, Any], window: dict[str, Any], put_ms_per_1000: float
) -> dict[str, Any]:
    """The **write_limit** figures: the idle window and the backlog's window with production settings (the
    predictions discarded), the cost of writing them (:func:`put_cost`), charged to the workers, and from them the
    shards per core at :data:`SHARD_WRITE_LIMIT` (:func:`shards_per_core`): a warmed JVM's (``shards_per_core``,
    the JIT's compilation left out) and as measured (``shards_per_core_jit_included``)."""
    idle_figures = _idle_figures(idle)
    backlog = _rate_figures(window, idle_figures)
    per_1000 = dict(backlog["ms_per_1000_rides_above_idle"])
    per_1000["workers"] = round(per_1000["workers"] + put_ms_per_1000, 2)
    per_1000["pod"] = round(per_1000["pod"] + put_ms_per_1000, 2)
    return {
        "shards": shards,
        "write_limit_per_shard": SHARD_WRITE_LIMIT,
        "idle": idle_figures,
        "window": backlog,
        "put_ms_per_1000_rides": put_ms_per_1000,
        "ms_per_1000_rides_above_idle_with_put": per_1000,
        "shards_per_core": shards_per_core(idle_figures["ms_per_second"], per_1000, shards),
        "shards_per_core_jit_included": shards_per_core(idle_figures["ms_per_second"], per_1000, shards, CPU_ROLES),
    }


def rate_label(run: dict[str, Any], rate: str) -> str:
    """A latency phase's rate as asked and, when the producer fell short of it (the emulator's answers could not
    keep up), as achieved: a figure is only ever labelled with the rate it was measured at."""
    phases = {str(phase["rate"]): phase for phase in run.get("pod_cpu", {}).get("phases", [])}
    achieved = phases.get(rate, {}).get("put_rate")
    if achieved is None or achieved >= 0.95 * int(rate):
        return f"{rate} rides/s"
    return f"{rate} rides/s asked, {achieved:,.0f} put"


def sustained(rate: int, put_rate: float, drain_seconds: float) -> bool:
    """Whether the pod and the emulator kept up with ``rate``: the producer put at least 95 % of it, and the last
    prediction came out at most :data:`SUSTAINED_DRAIN_SECONDS` after the last put (no backlog left growing)."""
    return put_rate >= 0.95 * rate and drain_seconds <= SUSTAINED_DRAIN_SECONDS


def _cells(figures: dict[str, float]) -> str:
    """A row's figures by :data:`CPU_ROLES`; a report older than the JIT's own column has none for it (``-``)."""
    return " | ".join(f"{figures[role]:,.1f}" if role in figures else "-" for role in (*CPU_ROLES, "pod"))


def pod_cpu_tables(report: dict[str, Any]) -> list[str]:
    """Each daemon run's CPU by process (idle, then per 1,000 rides at each rate, above idle and with it) and whether
    each rate was sustained; then the pod at the write limit's batches and the shards per core it gives."""
    measured = {mode: run["pod_cpu"] for mode, run in report["daemon"].items() if "pod_cpu" in run}
    if not measured:
        return ["No figures of the pod's CPU in this report: it predates them (`make bench` measures them)."]
    header = " | ".join(CPU_ROLE_LABELS[role] for role in CPU_ROLES)
    lines = [
        f"| daemon run, window, ms of CPU per second | {header} | pod | pod, ms per 1,000 rides |",
        "|---|" + "---|" * (len(CPU_ROLES) + 2),
    ]
    phases = [
        "| daemon run | rate asked (rides/s) | rate put | last prediction after the last put | sustained |",
        "|---|---|---|---|---|",
    ]
    for mode, cpu in measured.items():
        lines.append(f"| {mode}: idle, {cpu['shards']} shards leased | {_cells(cpu['idle']['ms_per_second'])} | - |")
        for rate, figures in cpu["rates"].items():
            lines.append(
                f"| {mode}: {rate_label(report['daemon'][mode], rate)} | {_cells(figures['ms_per_second'])} | "
                f"{figures['ms_per_1000_rides']['pod']:,.1f} |"
            )
        for phase in cpu["phases"]:
            phases.append(
                f"| {mode} | {phase['rate']:,} | {phase['put_rate']:,.0f} | {phase['drain_seconds']:.1f} s | "
                f"{'yes' if phase['sustained'] else 'no'} |"
            )
    return [*lines, "", *phases, "", *_write_limit_table(report)]


def _write_limit(report: dict[str, Any]) -> dict[str, Any] | None:
    run = report["daemon"].get("fork_server") or {}
    limit: dict[str, Any] | None = run.get("write_limit")
    return limit


def _write_limit_table(report: dict[str, Any]) -> list[str]:
    limit = _write_limit(report)
    if limit is None:
        return ["No write-limit run in this report: it predates it (`make bench` measures it)."]
    header = " | ".join(CPU_ROLE_LABELS[role] for role in CPU_ROLES)
    window, per_core = limit["window"], limit["shards_per_core"]
    shards = limit["shards"]
    return [
        f"The pod at the write limit's batches (fork server, production settings): after {limit['warmup_rides']:,} "
        f"rides unmeasured, {limit['batches']:,} batches of {limit['mean_batch_records']:,.0f} records on average "
        f"({limit['batch_records']:,} rides) in {window['seconds']:,.0f} s, the emulator's pace; counted "
        f"{window['rides']:,} (one batch per shard less: in flight when the window opened).",
        "",
        f"| window | {header} | pod |",
        "|---|" + "---|" * (len(CPU_ROLES) + 1),
        f"| idle, {shards} shards leased, polled once a second, ms of CPU per second | "
        f"{_cells(limit['idle']['ms_per_second'])} |",
        f"| the backlog, predictions discarded, ms of CPU per 1,000 rides above idle | "
        f"{_cells(window['ms_per_1000_rides_above_idle'])} |",
        f"| the same with the put's cost ({limit['put_ms_per_1000_rides']:.1f} ms per 1,000 rides, the processor "
        f"section's) on the workers | {_cells(limit['ms_per_1000_rides_above_idle_with_put'])} |",
        "",
        "| the JVM | F: the pod's fixed cost (ms/s) | I / S: a shard's idle cost (ms/s) | C x L / 1,000: its rides "
        "at the limit (ms/s) | a shard at the limit (ms/s) | shards per core | the daemon's share of a shard |",
        "|---|---|---|---|---|---|---|",
        _per_core_row("warmed: the JIT's compilation left out", per_core),
        *(
            [_per_core_row("as measured: the JIT's compilation in", limit["shards_per_core_jit_included"])]
            if "shards_per_core_jit_included" in limit
            else []
        ),
    ]


def _per_core_row(jvm: str, per_core: dict[str, Any]) -> str:
    return (
        f"| {jvm} | {per_core['pod_fixed_ms_per_second']:.1f} | {per_core['shard_idle_ms_per_second']:.1f} | "
        f"{per_core['shard_rides_ms_per_second']:.1f} | {per_core['shard_ms_per_second']:.1f} | "
        f"{per_core['shards_per_core']:.1f} | {per_core['daemon_share_of_a_shard']:.0%} |"
    )


def pod_cpu_goals(report: dict[str, Any]) -> list[tuple[str, float | None, float, str]]:
    """The shards per core goal, from the write-limit run (none in a report that predates it)."""
    limit = _write_limit(report)
    if limit is None:
        return []
    name = f"shards at {SHARD_WRITE_LIMIT:,} rides/s per core, the pod's CPU (daemon included, JVM warmed)"
    return [(name, math.floor(limit["shards_per_core"]["shards_per_core"]), GOAL_SHARDS_PER_CORE, ">=")]
