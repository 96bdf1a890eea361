"""CPU and memory of processes: CPU-seconds of one process, the CPU share of process trees over a while, and RSS,
PSS and USS of every process of the pod (the launcher, the daemon, the fork server, record processors, workers)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "ROLES",
    "ROLE_LABELS",
    "CpuShare",
    "cpu_seconds",
    "jit_threads_cpu_seconds",
    "per_shard",
    "pod_memory",
    "pod_processes",
]

#: What /proc calls HotSpot's JIT compiler threads (``C1 CompilerThread0``, ``C2 CompilerThread1``, ...): a
#: thread's name there is cut at 15 characters.
_JIT_THREAD_NAME = "CompilerThre"


def cpu_seconds(process: psutil.Process) -> float:
    """User plus system CPU-seconds ``process`` has used."""
    return float(sum(process.cpu_times()[:2]))


def jit_threads_cpu_seconds(process: psutil.Process, proc: Path = Path("/proc")) -> dict[int, float]:
    """User plus system CPU-seconds of each JIT compiler thread alive now in the JVM ``process``, by thread id.

    The JVM compiles its hot code in these threads, for minutes after it starts and a little at a time for a while
    after that; HotSpot also ends a compiler thread that has had nothing to do, and the CPU of a thread that ended
    is no longer its own here (it is still in the process's total)."""
    threads = {}
    for thread in process.threads():  # psutil gives each thread's times; /proc alone gives its name
        try:
            name = (proc / str(process.pid) / "task" / str(thread.id) / "comm").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        if _JIT_THREAD_NAME in name:
            threads[thread.id] = thread.user_time + thread.system_time
    return threads


class CpuShare:
    """CPU used by processes (each with its children) since creation, in cores (1.0 = one core all the time)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._started = time.monotonic()
        self._before = {name: self._cpu(process) for name, process in self._processes.items()}

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        total = 0.0
        for one in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += cpu_seconds(one)
        return total

    def shares(self) -> dict[str, float]:
        seconds = time.monotonic() - self._started
        return {
            name: round((self._cpu(process) - self._before[name]) / seconds, 2)
            for name, process in self._processes.items()
        }


def _memory(process: psutil.Process) -> dict[str, Any]:
    info = process.memory_full_info()
    return {
        "pid": process.pid,
        "rss_mb": round(info.rss / 1e6, 1),
        "pss_mb": round(info.pss / 1e6, 1),
        "uss_mb": round(info.uss / 1e6, 1),
    }


#: The pod's processes by role, in the order the reports show them.
ROLES = ("launcher", "daemon", "fork_server", "record_processors", "workers")
#: How the charts and tables name each role.
ROLE_LABELS = {
    "launcher": "launcher",
    "daemon": "daemon (java)",
    "fork_server": "fork server",
    "record_processors": "record processors",
    "workers": "workers",
}


def pod_processes(launcher_pid: int) -> dict[str, list[psutil.Process]]:
    """Every process of the pod by role: the launcher, the daemon (java), the fork server, the record processors
    (the daemon's children, one per leased shard) and the workers (the fork server's children, one per shard)."""
    launcher = psutil.Process(launcher_pid)
    roles: dict[str, list[psutil.Process]] = {role: [] for role in ROLES}
    roles["launcher"].append(launcher)
    for child in launcher.children():
        try:
            name = " ".join(child.cmdline())
        except psutil.NoSuchProcess:  # a short-lived child (the model's preparation) that just ended
            continue
        if "MultiLangDaemon" in name:
            roles["daemon"].append(child)
            roles["record_processors"] += child.children()
        elif "consumer.runtime.forkserver" in name:
            roles["fork_server"].append(child)
            roles["workers"] += child.children()
    return roles


def pod_memory(launcher_pid: int) -> dict[str, Any]:
    """Every process of the pod: the launcher, the daemon (java), the fork server, record processors, workers."""
    roles = pod_processes(launcher_pid)
    return {
        "launcher": _memory(roles["launcher"][0]),
        "daemon": _memory(roles["daemon"][0]) if roles["daemon"] else None,
        "fork_server": _memory(roles["fork_server"][0]) if roles["fork_server"] else None,
        "record_processors": [_memory(p) for p in roles["record_processors"]],
        "workers": [_memory(p) for p in roles["workers"]],
    }


def per_shard(memory: dict[str, Any]) -> dict[str, Any]:
    """What one more leased shard adds: its record processor, plus its worker with the fork server."""
    processors, workers = memory["record_processors"], memory["workers"]
    shards = max(len(processors), 1)

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return sum(row[key] for row in rows) / shards if rows else 0.0

    return {
        "shards": len(processors),
        "uss_mb": round(mean(processors, "uss_mb") + mean(workers, "uss_mb"), 1),
        "pss_mb": round(mean(processors, "pss_mb") + mean(workers, "pss_mb"), 1),
        "rss_mb": round(mean(processors, "rss_mb") + mean(workers, "rss_mb"), 1),
        "note": "USS: memory only this shard's processes hold (what one more shard adds); RSS counts every "
        "shared page again in each process.",
    }
