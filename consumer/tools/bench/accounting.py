"""CPU and memory of processes: CPU-seconds of one process, the CPU share of process trees over a while, and RSS,
PSS and USS of every process of the pod (the launcher, the daemon, the fork server, record processors, workers)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil

__all__ = ["CpuShare", "cpu_seconds", "per_shard", "pod_memory"]


def cpu_seconds(process: psutil.Process) -> float:
    """User plus system CPU-seconds ``process`` has used."""
    return float(sum(process.cpu_times()[:2]))


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


def pod_memory(launcher_pid: int) -> dict[str, Any]:
    """Every process of the pod: the launcher, the daemon (java), the fork server, record processors, workers."""
    launcher = psutil.Process(launcher_pid)
    daemon = server = None
    for child in launcher.children():
        name = " ".join(child.cmdline())
        if "MultiLangDaemon" in name:
            daemon = child
        elif "consumer.runtime.forkserver" in name:
            server = child
    processors = daemon.children() if daemon is not None else []
    workers = server.children() if server is not None else []
    return {
        "launcher": _memory(launcher),
        "daemon": _memory(daemon) if daemon is not None else None,
        "fork_server": _memory(server) if server is not None else None,
        "record_processors": [_memory(p) for p in processors],
        "workers": [_memory(p) for p in workers],
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
