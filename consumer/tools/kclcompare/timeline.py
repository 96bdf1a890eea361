"""One variant's timeline: four scenarios, each on a cluster of its own (fresh emulators, streams and application),
and what each measures.

1. **cold start, then steady load**: worker A alone on a new application (lease table empty), records waiting on
   every shard: seconds from the daemon's start to every shard's first batch, and per shard from its lease (the
   daemon's log) to its first batch; then A alone under a steady load: the daemon's CPU-seconds per 1,000 rides
   and its RSS.
2. **join, then SIGTERM**: A alone, then worker B starts under load: seconds until B's first batch and until the
   leases are balanced, records written twice while the leases move; then B gets SIGTERM under load (a rolling
   update): seconds from the signal until A has had a batch of each of B's shards, records written twice.
3. **SIGKILL of a worker** that does not hold KCL 3's leader lock, and
4. **SIGKILL of the leader** (KCL 2.x has none: the worker that started first), A and B balanced first: seconds from
   the kill until the survivor has had a batch of each of the victim's shards, records written twice.

Before each measured step the load stops and the cluster settles (every record accounted for, every lease
checkpointed at its shard's end), so each step's duplicates are its own.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from consumer.tools.bench import kcl_log
from consumer.tools.kclcompare.cluster import Cluster, say

__all__ = ["run_timeline"]

A, B = "worker-a", "worker-b"
#: Longest wait for one step: KCL 3's leader lock alone holds 120 s after a SIGKILL.
STEP_TIMEOUT = 420.0


def _first_worker(cluster: Cluster) -> dict[str, Any]:
    """Start A on the new application and wait for its first batch of every shard; the cold start's figures."""
    cluster.preload(per_shard=50)
    consumer = cluster.start(A)
    cluster.wait(lambda: len(cluster.first_batches(A)) == cluster.shards, timeout=STEP_TIMEOUT, what="A's batches")
    first = cluster.first_batches(A)
    daemon_at = kcl_log.seconds(next(kcl_log.log_events(consumer.log_path, "daemon_started"))["timestamp"])
    leased = kcl_log.daemon_times(consumer.log_path, kcl_log.LEASE_TAKEN)
    lease_to_first = {shard: round(first[shard] - at, 2) for shard, at in leased.items() if shard in first}
    return {
        "daemon_start_to_every_shard_seconds": round(max(first.values()) - daemon_at, 2),
        "daemon_start_to_first_batch_seconds": round(min(first.values()) - daemon_at, 2),
        "lease_to_first_batch_seconds": lease_to_first,
        "lease_to_first_batch_median_seconds": (
            round(statistics.median(lease_to_first.values()), 2) if lease_to_first else None
        ),
    }


def _steady(cluster: Cluster, seconds: float, rate: int) -> dict[str, Any]:
    load = cluster.load(rate)
    time.sleep(5)  # the first ticks reach the daemon
    cpu_before, sent_before = cluster.daemon_cpu_seconds(A), load.sent
    time.sleep(seconds)
    cpu, rides = cluster.daemon_cpu_seconds(A) - cpu_before, load.sent - sent_before
    daemon = cluster.daemon(A)
    rss = daemon.memory_info().rss if daemon is not None else 0
    load.stop()
    cluster.settle()
    return {
        "rides": rides,
        "seconds": seconds,
        "rate_per_second": rate,
        "daemon_cpu_seconds_per_1000_rides": round(1000 * cpu / max(rides, 1), 3),
        "daemon_rss_mb": round(rss / 1e6, 1),
    }


def _join(cluster: Cluster) -> dict[str, Any]:
    duplicates = cluster.settle()["duplicated"]
    load = cluster.load()
    time.sleep(3)
    started = time.time()
    cluster.start(B)
    first = cluster.wait(lambda: cluster.first_batches(B, started), timeout=STEP_TIMEOUT, what="B's first batch")
    cluster.wait(lambda: cluster.balanced((A, B)), timeout=STEP_TIMEOUT, what="balanced leases")
    balanced_at = time.time()
    time.sleep(10)
    load.stop()
    counts = cluster.settle()
    return {
        "start_to_first_batch_seconds": round(min(first.values()) - started, 2),
        "start_to_balanced_seconds": round(balanced_at - started, 2),
        "duplicated": counts["duplicated"] - duplicates,
        "counts": counts,
    }


def _two_balanced(cluster: Cluster) -> None:
    """A, then B, under load until the leases are balanced (KCL 3 moves leases by throughput: on an idle stream a
    second worker gets none)."""
    _first_worker(cluster)
    load = cluster.load()
    cluster.start(B)
    cluster.wait(lambda: cluster.balanced((A, B)), timeout=STEP_TIMEOUT, what="balanced leases")
    load.stop()


def _takeover(cluster: Cluster, victim: str, how: str) -> dict[str, Any]:
    """Under load, stop ``victim`` (``how``: "SIGTERM" and wait for its exit, or "SIGKILL") and time the other
    worker's first batch of each of its shards."""
    survivor = A if victim == B else B
    duplicates = cluster.settle()["duplicated"]
    load = cluster.load()
    time.sleep(5)
    shards = {shard for shard, owner in cluster.owners().items() if owner == victim}
    leader = cluster.leader() if cluster.variant.has_leader else None
    at = time.time()
    status = cluster.workers[victim].stop(timeout=90) if how == "SIGTERM" else cluster.workers[victim].kill()
    taken = cluster.wait(
        lambda: cluster.first_batch(survivor, shards, at), timeout=STEP_TIMEOUT, what=f"takeover after {how}"
    )
    time.sleep(10)
    load.stop()
    counts = cluster.settle()
    return {
        "victim": victim,
        "victim_was_leader": (leader == victim) if leader else None,
        "victim_shards": sorted(shards),
        "exit_status": status,
        "takeover_seconds": round(taken - at, 2),
        "duplicated": counts["duplicated"] - duplicates,
        "counts": counts,
    }


def _leader(cluster: Cluster) -> str:
    """KCL 3: the worker holding the leader lock; KCL 2.x: A, the worker that started first."""
    if not cluster.variant.has_leader:
        return A
    return str(cluster.wait(cluster.leader, timeout=60, what="a leader"))


def run_timeline(
    make_cluster: Callable[[], Cluster],
    phases: dict[str, Any],
    *,
    steady_seconds: float,
    steady_rate: int,
    saved: Callable[[], None],
) -> None:
    """Every scenario, each on a fresh cluster from ``make_cluster``, its figures put in ``phases`` and ``saved()``
    after each scenario (a long run that fails late keeps what it measured)."""
    with make_cluster() as cluster:
        key = cluster.variant.key
        say(f"{key}: cold start (worker A on a new lease table), then steady load")
        phases["cold_start"] = _first_worker(cluster)
        phases["steady"] = _steady(cluster, steady_seconds, steady_rate)
    saved()
    with make_cluster() as cluster:
        say(f"{key}: worker B joins under load, then gets SIGTERM")
        _first_worker(cluster)
        phases["join"] = _join(cluster)
        phases["sigterm"] = _takeover(cluster, B, "SIGTERM")
    saved()
    with make_cluster() as cluster:
        _two_balanced(cluster)
        worker = B if _leader(cluster) == A else A
        say(f"{key}: SIGKILL of {worker}, not the leader, under load")
        phases["sigkill_worker"] = _takeover(cluster, worker, "SIGKILL")
    saved()
    with make_cluster() as cluster:
        _two_balanced(cluster)
        leader = _leader(cluster)
        say(f"{key}: SIGKILL of the leader ({leader}) under load")
        phases["sigkill_leader"] = _takeover(cluster, leader, "SIGKILL")
    saved()
