"""The pod's CPU by process: user plus system CPU-seconds of each process of the pod (utime and stime of
/proc/<pid>/stat, read through psutil) over measured windows: an idle one (the leases held, no rides put), one per
rate the benchmark puts on the input stream, from the first put until the last prediction is out, and the
write-limit run's backlog (:mod:`~consumer.tools.bench.limit`).

The daemon's JIT compiler threads are counted apart from the rest of the daemon (role ``jit``): the JVM compiles
its hot code for minutes after it starts, and a few minutes of the benchmark are all warm-up to it. A pod that has
run for a while no longer pays that; the shards per core are therefore given for a warmed JVM, the compilation left
out, and as measured, the compilation in.

From them, what 1,000 rides cost each process above its idle cost; :mod:`~consumer.tools.bench.per_core` derives
from the write-limit run's windows how many shards at AWS's write limit one core keeps up with."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil

from consumer.tools.bench.accounting import ROLE_LABELS, ROLES, cpu_seconds, jit_threads_cpu_seconds, pod_processes

__all__ = [
    "CPU_ROLES",
    "CPU_ROLE_LABELS",
    "SUSTAINED_DRAIN_SECONDS",
    "PodCpu",
    "cells",
    "idle_figures",
    "pod_cpu_summary",
    "pod_cpu_tables",
    "put_cost",
    "rate_figures",
    "rate_label",
    "sustained",
]

#: How soon after the last put the last prediction must be out for a rate to count as sustained.
SUSTAINED_DRAIN_SECONDS = 5.0

#: The pod's CPU by role: the processes' roles, with the daemon's JIT compiler threads (``jit``) apart from the
#: rest of the daemon (``daemon``).
CPU_ROLES = ("launcher", "daemon", "jit", "fork_server", "record_processors", "workers")
CPU_ROLE_LABELS = {**ROLE_LABELS, "daemon": "daemon (java), JIT apart", "jit": "JIT compiler (java)"}


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


def idle_figures(window: dict[str, Any]) -> dict[str, Any]:
    cores = {role: used / window["seconds"] for role, used in window["cpu_seconds"].items()}
    return {**window, "ms_per_second": _rounded({role: 1000 * value for role, value in cores.items()})}


def rate_figures(window: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
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


def pod_cpu_summary(
    shards: int, idle: dict[str, Any], rates: dict[int, dict[str, Any]], phases: list[dict[str, Any]]
) -> dict[str, Any]:
    """The **pod_cpu** figures of a daemon run: the idle window, each rate's window, whether each rate was
    sustained, and the highest one that was."""
    idle_now = idle_figures(idle)
    kept = [phase["rate"] for phase in phases if phase["sustained"]]
    return {
        "shards": shards,
        "idle": idle_now,
        "rates": {str(rate): rate_figures(window, idle_now) for rate, window in rates.items()},
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


def cells(figures: dict[str, float]) -> str:
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
        lines.append(f"| {mode}: idle, {cpu['shards']} shards leased | {cells(cpu['idle']['ms_per_second'])} | - |")
        for rate, figures in cpu["rates"].items():
            lines.append(
                f"| {mode}: {rate_label(report['daemon'][mode], rate)} | {cells(figures['ms_per_second'])} | "
                f"{figures['ms_per_1000_rides']['pod']:,.1f} |"
            )
        for phase in cpu["phases"]:
            phases.append(
                f"| {mode} | {phase['rate']:,} | {phase['put_rate']:,.0f} | {phase['drain_seconds']:.1f} s | "
                f"{'yes' if phase['sustained'] else 'no'} |"
            )
    return [*lines, "", *phases]
