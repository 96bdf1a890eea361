"""What one benchmark run does (:class:`BenchConfig`), and its progress lines on stderr."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["BenchConfig", "machine_facts", "say"]


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run does. :meth:`quick_run` is the CI smoke (one short run of every section)."""

    output: Path
    work_dir: Path
    runs: int = 3
    rides_per_run: int = 20_000
    lambda_rides: int = 300
    batch_sizes: tuple[int, ...] = (100, 500, 1_000, 2_000, 5_000, 10_000)
    shard_counts: tuple[int, ...] = (1, 2, 4)
    daemon_shards: int = 4
    daemon_modes: tuple[bool, ...] = (True, False)  # with the fork server, without
    latency_seconds: float = 20.0
    latency_rates: tuple[int, ...] = (100, 500)  # rides per second put on the input stream, one phase each
    # Then rates from low to high, one phase each, until one is not sustained (the emulator's ceiling with the pod
    # on this machine; pod_cpu.sustained). None of them is a latency rate.
    ceiling_rates: tuple[int, ...] = (50, 150, 200, 250, 300, 400, 600, 800, 1_000)
    warmup_seconds: float = 40.0  # rides at the first latency rate before any phase (the JVM's JIT), not measured
    idle_seconds: float = 30.0  # the pod's idle CPU (leases held, no rides), after the phases
    # The write-limit run (bench.limit): rides put before the pod starts, and how many of them go unmeasured first.
    # Two shards: fewer batches in flight when the window opens, and a load the emulator answers.
    limit_shards: int = 2
    limit_backlog: int = 24_000
    limit_warmup: int = 8_000
    limit_idle_seconds: float = 60.0
    # Then a second pod with more shards leased and no rides, idle as long once its workers are up and it has
    # settled: with the first idle window, it splits the daemon's idle cost into a fixed part and one per shard.
    limit_more_shards: int = 6
    limit_settle_seconds: float = 30.0
    small_model: bool = False  # True: 20 trees on 20,000 trips (quick); False: the demo's 100-tree model
    batch_repeats: tuple[int, ...] = (1, 8)  # the month file as it is, and its rows 8 times over (`score`)
    web_rates: tuple[int, ...] = (100, 500, 1000)  # requests per second, one phase each (`serve`, vegeta)
    web_seconds: float = 15.0
    web_workers: int = 2  # SERVE_WORKERS: one per core here
    quick: bool = False

    @classmethod
    def quick_run(cls, output: Path, work_dir: Path) -> BenchConfig:
        return cls(
            output=output,
            work_dir=work_dir,
            runs=1,
            rides_per_run=3_000,
            lambda_rides=30,
            batch_sizes=(100, 1_000, 10_000),
            shard_counts=(1, 2),
            daemon_shards=2,
            daemon_modes=(True,),
            latency_seconds=6.0,
            latency_rates=(200,),
            ceiling_rates=(300,),
            warmup_seconds=3.0,
            idle_seconds=3.0,
            limit_backlog=16_000,
            limit_warmup=2_000,
            limit_idle_seconds=3.0,
            limit_more_shards=4,
            limit_settle_seconds=3.0,
            small_model=True,
            batch_repeats=(1,),
            web_rates=(200,),
            web_seconds=3.0,
            quick=True,
        )


def say(message: str) -> None:
    """A progress line on stderr (stdout gets the table)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def machine_facts() -> dict[str, Any]:
    """What a report says of the machine it ran on, taken when the run starts (the reports add the load after)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_before": list(os.getloadavg()),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
