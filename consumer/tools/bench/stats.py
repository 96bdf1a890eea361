"""How the runs of a figure become the figure: the median of runs, quantiles of latencies."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["percentiles", "quantiles", "summary"]


def summary(runs: list[dict[str, Any]], key: str, *, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The median of ``key`` (and of each ``extra`` figure the runs have) over ``runs``, with the runs."""
    result: dict[str, Any] = {key: statistics.median(run[key] for run in runs), "runs": runs}
    for name in extra:
        values = [run[name] for run in runs if run.get(name) is not None]
        result[name] = statistics.median(values) if values else None
    return result


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """Count, p50, p90, p99 and max of ``values`` (nearest rank, rounded to 0.1)."""
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

    return {"count": len(ordered), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": round(ordered[-1], 1)}


def percentiles(values: Sequence[float]) -> list[float]:
    """Percentiles 0 to 100 of ``values`` (nearest rank, rounded to 0.1): 101 numbers, a distribution's curve."""
    ordered = sorted(values)
    if not ordered:
        return []
    return [round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1) for p in range(101)]
