"""How many shards at AWS's write limit one core keeps up with, from the write-limit run's windows
(:mod:`~consumer.tools.bench.limit`): the formula docs/performance.md states (:func:`shards_per_core`), the daemon's
idle cost split into a fixed part and one per shard (:func:`daemon_idle_split`), the run's figures
(:func:`write_limit_summary`), their table and the issue's goal."""

from __future__ import annotations

import math
from typing import Any

from consumer.tools.bench.pod_cpu import CPU_ROLE_LABELS, CPU_ROLES, cells, idle_figures, rate_figures

__all__ = [
    "GOAL_SHARDS_PER_CORE",
    "SHARD_WRITE_LIMIT",
    "daemon_idle_split",
    "shard_cost_by_role",
    "shards_per_core",
    "shards_per_core_goals",
    "write_limit_summary",
    "write_limit_table",
]

#: Records per second one Kinesis shard accepts (AWS's write limit): the most a leased shard can bring.
SHARD_WRITE_LIMIT = 1_000

#: The issue's goal: shards at the write limit one core keeps up with, the daemon's CPU included.
GOAL_SHARDS_PER_CORE = 16

#: The roles a pod pays for whatever its shard count (the rest is counted per leased shard).
_FIXED_ROLES = ("launcher", "fork_server")

#: The roles a warmed JVM still pays for: all but the compilation.
_WARM_ROLES = tuple(role for role in CPU_ROLES if role != "jit")


def shards_per_core(
    idle_ms_per_second: dict[str, float],
    above_idle_ms_per_1000: dict[str, float],
    shards: int,
    roles: tuple[str, ...] = _WARM_ROLES,
    *,
    daemon_fixed_ms_per_second: float = 0.0,
    scrape_ms_per_second: float = 0.0,
) -> dict[str, Any]:
    """How many shards at :data:`SHARD_WRITE_LIMIT` one core keeps up with, and the daemon's share, counting the CPU
    of ``roles`` (by default a warmed JVM's: all but the JIT's compilation).

    ``N = (1000 - F) / (I / S + C * L / 1000)`` with every term in ms of CPU per second (1,000 = one core): F the
    pod's fixed idle cost (the launcher, the fork server, ``daemon_fixed_ms_per_second``: the part of the
    daemon's idle cost that does not grow with shards, :func:`daemon_idle_split`, and ``scrape_ms_per_second``:
    Prometheus's reads of /metrics at their production interval), I the idle cost of what scales
    with shards (the rest of the daemon's: its polls and leases; the record processors, the workers) measured with S
    shards leased, C the pod's CPU per 1,000 rides above idle and L the write limit (1,000 rides/s). The daemon's
    share is given of a shard's cost (its I / S and C * L / 1000) and of the core at N shards (its fixed part too)."""
    daemon_fixed = daemon_fixed_ms_per_second if "daemon" in roles else 0.0
    fixed = (
        sum(idle_ms_per_second.get(role, 0.0) for role in roles if role in _FIXED_ROLES)
        + daemon_fixed
        + scrape_ms_per_second
    )
    idle, rides = shard_cost_by_role(
        idle_ms_per_second, above_idle_ms_per_1000, shards, daemon_fixed_ms_per_second=daemon_fixed
    )
    idle_per_shard = sum(idle[role] for role in roles)
    rides_per_shard = sum(rides[role] for role in roles)
    per_shard = idle_per_shard + rides_per_shard
    daemon = sum(idle[role] + rides[role] for role in roles if role in ("daemon", "jit"))
    n = (1000 - fixed) / per_shard
    return {
        "pod_fixed_ms_per_second": round(fixed, 2),
        "daemon_fixed_ms_per_second": round(daemon_fixed, 2),
        "shard_idle_ms_per_second": round(idle_per_shard, 2),
        "shard_rides_ms_per_second": round(rides_per_shard, 2),
        "shard_ms_per_second": round(per_shard, 2),
        "shards_per_core": round(n, 1),
        "daemon_share_of_a_shard": round(daemon / per_shard, 3),
        "daemon_share_of_the_core": round((daemon_fixed + n * daemon) / 1000, 3),
    }


def shard_cost_by_role(
    idle_ms_per_second: dict[str, float],
    above_idle_ms_per_1000: dict[str, float],
    shards: int,
    *,
    daemon_fixed_ms_per_second: float = 0.0,
) -> tuple[dict[str, float], dict[str, float]]:
    """What :func:`shards_per_core` charges one shard at the write limit, by role (:data:`CPU_ROLES`), ms of CPU per
    second: its idle share (I / S: a scaling role's idle cost over the S shards, the daemon's less its fixed part;
    none for the fixed roles, which F carries) and its rides (C x L / 1,000)."""
    idle = {
        role: 0.0
        if role in _FIXED_ROLES
        else (idle_ms_per_second.get(role, 0.0) - (daemon_fixed_ms_per_second if role == "daemon" else 0.0)) / shards
        for role in CPU_ROLES
    }
    rides = {role: above_idle_ms_per_1000.get(role, 0.0) * SHARD_WRITE_LIMIT / 1000 for role in CPU_ROLES}
    return idle, rides


def daemon_idle_split(few: tuple[int, dict[str, float]], many: tuple[int, dict[str, float]]) -> dict[str, Any]:
    """The daemon's idle cost (JIT apart), ms of CPU per second, as ``fixed + per_shard * S`` from two idle windows
    with different shard counts ``(S, ms_per_second by role)``. Clamped so that neither part is negative: a noisy
    pair that would make the fixed part negative charges it all per shard (what one window alone does), one that
    would make the per-shard part negative charges it all as fixed."""
    (s1, idle1), (s2, idle2) = few, many
    if s2 == s1:
        raise ValueError(f"two idle windows with the same shard count ({s1}) cannot split the daemon's idle cost")
    d1, d2 = idle1.get("daemon", 0.0), idle2.get("daemon", 0.0)
    slope = (d2 - d1) / (s2 - s1)
    per_shard = min(max(slope, 0.0), d1 / s1)
    return {
        "shards": [s1, s2],
        "daemon_ms_per_second": [round(d1, 2), round(d2, 2)],
        "slope_ms_per_second_per_shard": round(slope, 2),
        "per_shard_ms_per_second": round(per_shard, 2),
        "fixed_ms_per_second": round(d1 - per_shard * s1, 2),
    }


def write_limit_summary(
    shards: int,
    idle: dict[str, Any],
    window: dict[str, Any],
    put_ms_per_1000: float,
    *,
    more_shards_idle: tuple[int, dict[str, Any]] | None = None,
    scrape: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The **write_limit** figures: the idle window and the backlog's window with production settings (the
    predictions discarded), the cost of writing them (:func:`put_cost`), charged to the workers, and from them the
    shards per core at :data:`SHARD_WRITE_LIMIT` (:func:`shards_per_core`): a warmed JVM's (``shards_per_core``,
    the JIT's compilation left out) and as measured (``shards_per_core_jit_included``). With ``more_shards_idle``
    (a second pod's idle window with more shards leased) the daemon's idle cost is split into a fixed part and a
    part per shard (:func:`daemon_idle_split`); without it all of it is charged per shard. ``scrape`` (what one read
    of /metrics costs the pod, and Prometheus's interval) adds the scrapes to the pod's fixed cost."""
    idle_now = idle_figures(idle)
    backlog = rate_figures(window, idle_now)
    per_1000 = dict(backlog["ms_per_1000_rides_above_idle"])
    per_1000["workers"] = round(per_1000["workers"] + put_ms_per_1000, 2)
    per_1000["pod"] = round(per_1000["pod"] + put_ms_per_1000, 2)
    split: dict[str, Any] = {}
    daemon_fixed = 0.0
    if more_shards_idle is not None:
        more_shards, more_window = more_shards_idle
        more_figures = idle_figures(more_window)
        split = {
            "more_shards_idle": {"shards": more_shards, **more_figures},
            "daemon_idle_split": daemon_idle_split(
                (shards, idle_now["ms_per_second"]), (more_shards, more_figures["ms_per_second"])
            ),
        }
        daemon_fixed = split["daemon_idle_split"]["fixed_ms_per_second"]
    idle_ms = idle_now["ms_per_second"]
    scrapes = scrape["ms_per_scrape"] / scrape["interval_seconds"] if scrape is not None else 0.0
    fixed = {"daemon_fixed_ms_per_second": daemon_fixed, "scrape_ms_per_second": scrapes}
    return {
        "shards": shards,
        "write_limit_per_shard": SHARD_WRITE_LIMIT,
        "idle": idle_now,
        **split,
        "window": backlog,
        **({"scrape": scrape} if scrape is not None else {}),
        "put_ms_per_1000_rides": put_ms_per_1000,
        "ms_per_1000_rides_above_idle_with_put": per_1000,
        "shards_per_core": shards_per_core(idle_ms, per_1000, shards, **fixed),
        "shards_per_core_jit_included": shards_per_core(idle_ms, per_1000, shards, CPU_ROLES, **fixed),
    }


def _write_limit(report: dict[str, Any]) -> dict[str, Any] | None:
    run = report["daemon"].get("fork_server") or {}
    limit: dict[str, Any] | None = run.get("write_limit")
    return limit


def write_limit_table(report: dict[str, Any]) -> list[str]:
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
        f"{cells(limit['idle']['ms_per_second'])} |",
        f"| the backlog, predictions discarded, ms of CPU per 1,000 rides above idle | "
        f"{cells(window['ms_per_1000_rides_above_idle'])} |",
        f"| the same with the put's cost ({limit['put_ms_per_1000_rides']:.1f} ms per 1,000 rides, the processor "
        f"section's) on the workers | {cells(limit['ms_per_1000_rides_above_idle_with_put'])} |",
        *_more_shards_row(limit),
        "",
        *_split_sentence(limit),
        *_scrape_sentence(limit),
        "| the JVM | F: the pod's fixed cost (ms/s) | I / S: a shard's idle cost (ms/s) | C x L / 1,000: its rides "
        "at the limit (ms/s) | a shard at the limit (ms/s) | shards per core | the daemon's share of the core |",
        "|---|---|---|---|---|---|---|",
        _per_core_row("warmed: the JIT's compilation left out", per_core),
        *(
            [_per_core_row("as measured: the JIT's compilation in", limit["shards_per_core_jit_included"])]
            if "shards_per_core_jit_included" in limit
            else []
        ),
    ]


def _more_shards_row(limit: dict[str, Any]) -> list[str]:
    more = limit.get("more_shards_idle")
    if more is None:
        return []
    return [
        f"| idle, a second pod with {more['shards']} shards leased and no rides, ms of CPU per second | "
        f"{cells(more['ms_per_second'])} |"
    ]


def _split_sentence(limit: dict[str, Any]) -> list[str]:
    split = limit.get("daemon_idle_split")
    if split is None:
        return ["The daemon's idle cost is all charged per shard (this report has one idle window).", ""]
    (few, many), (d_few, d_many) = split["shards"], split["daemon_ms_per_second"]
    return [
        f"The daemon's idle cost, JIT apart, is {d_few:.1f} ms/s with {few} shards and {d_many:.1f} with {many}: "
        f"{split['fixed_ms_per_second']:.1f} ms/s whatever the shards (counted in F) and "
        f"{split['per_shard_ms_per_second']:.1f} per shard (in I / S).",
        "",
    ]


def _scrape_sentence(limit: dict[str, Any]) -> list[str]:
    scrape = limit.get("scrape")
    if scrape is None:
        return []
    return [
        f"One read of the pod's /metrics costs it {scrape['ms_per_scrape']:.1f} ms of CPU (the launcher serves it; "
        f"{scrape['scrapes']} reads timed); Prometheus reads it every {scrape['interval_seconds']:g} s, "
        f"{scrape['ms_per_scrape'] / scrape['interval_seconds']:.2f} ms/s, counted in F. The windows above hold no "
        "read of it: the benchmark follows the backlog in the pod's metrics folder.",
        "",
    ]


def _per_core_row(jvm: str, per_core: dict[str, Any]) -> str:
    share = per_core.get("daemon_share_of_the_core", per_core["daemon_share_of_a_shard"])
    return (
        f"| {jvm} | {per_core['pod_fixed_ms_per_second']:.1f} | {per_core['shard_idle_ms_per_second']:.1f} | "
        f"{per_core['shard_rides_ms_per_second']:.1f} | {per_core['shard_ms_per_second']:.1f} | "
        f"{per_core['shards_per_core']:.1f} | {share:.0%} |"
    )


def shards_per_core_goals(report: dict[str, Any]) -> list[tuple[str, float | None, float, str]]:
    """The shards per core goal, from the write-limit run (none in a report that predates it)."""
    limit = _write_limit(report)
    if limit is None:
        return []
    name = f"shards at {SHARD_WRITE_LIMIT:,} rides/s per core, the pod's CPU (daemon included, JVM warmed)"
    return [(name, math.floor(limit["shards_per_core"]["shards_per_core"]), GOAL_SHARDS_PER_CORE, ">=")]
