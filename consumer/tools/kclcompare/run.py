"""One comparison run: the jars of every variant installed (from their locks, verified), one local stack, one model,
then each variant's timeline on its own streams and application. The JSON report is written after each variant, so
a long run that fails half-way keeps what it measured."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from consumer.tools.kclcompare.cluster import Cluster, say
from consumer.tools.kclcompare.report import versions_table
from consumer.tools.kclcompare.timeline import run_timeline
from consumer.tools.kclcompare.variants import VARIANTS, Variant

__all__ = ["CompareConfig", "run_comparison"]


@dataclass(frozen=True)
class CompareConfig:
    output: Path
    work_dir: Path
    variants: tuple[str, ...] = tuple(VARIANTS)
    shards: int = 4
    rate: int = 50  # rides per second while workers join, stop or die
    steady_rate: int = 100  # rides per second of the steady phase (CPU per 1,000 rides)
    steady_seconds: float = 60.0


def _model(work_dir: Path, trips: str) -> tuple[str, str]:
    from consumer.tools.training import local_store, train

    tracking_uri, artifacts = local_store(work_dir / "mlflow")
    train(trips, tracking_uri=tracking_uri, artifact_location=artifacts, sample=20_000, n_estimators=20)
    return "models:/ride-duration@production", tracking_uri


def run_comparison(config: CompareConfig, *, trips: str) -> dict[str, Any]:
    """Run every variant of ``config``; write and return the report."""
    from consumer.tools.bench.rides import heldout_rides
    from consumer.tools.kcljars import install

    began = time.monotonic()
    config.work_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": list(os.getloadavg()),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "setup": {
            "shards": config.shards,
            "workers": 2,
            "rate_per_second": config.rate,
            "steady_rate_per_second": config.steady_rate,
            "steady_seconds": config.steady_seconds,
            "failover_time_millis": 10_000,
            "idle_time_between_reads_ms": 250,
        },
        "variants": {},
    }
    rides = heldout_rides(trips)
    model_uri, tracking_uri = _model(config.work_dir, trips)
    for key in config.variants:
        variant = VARIANTS[key]
        jar_dir = config.work_dir / "jars" / key
        lock = install(variant.lock, jar_dir)
        say(f"{key}: {variant.title}, {len(lock.pins)} jars (amazon-kclpy {lock.kclpy_version})")

        def make_cluster(variant: Variant = variant, jar_dir: Path = jar_dir) -> Cluster:
            return Cluster(
                variant, model_uri, tracking_uri, jar_dir, config.work_dir, rides, config.shards, config.rate
            )

        phases: dict[str, Any] = {}
        report["variants"][key] = {
            "title": variant.title,
            "kcl": lock.kcl_version,
            "amazon_kclpy": lock.kclpy_version,
            "jars": len(lock.pins),
            "properties": variant.properties,
            "phases": phases,
        }

        def saved() -> None:
            report["machine"].update(load_after=list(os.getloadavg()), seconds=round(time.monotonic() - began))
            config.output.parent.mkdir(parents=True, exist_ok=True)
            config.output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))

        run_timeline(
            make_cluster, phases, steady_seconds=config.steady_seconds, steady_rate=config.steady_rate, saved=saved
        )
    print("\n".join(versions_table(report)))
    say(f"JSON written to {config.output}")
    return report


def command(
    variants: tuple[str, ...],
    *,
    output: Path | None,
    trips: str | None,
    work_dir: Path | None,
    docs_from: Path | None,
    docs_dir: Path | None,
) -> str:
    """``python -m consumer kcl-compare``: run the comparison, or with ``docs_from`` only render its docs page;
    return what to print."""
    import shutil

    from consumer.errors import ConsumerError
    from consumer.tools.kclcompare.report import write_versions_docs
    from consumer.tools.paths import DEFAULT_TRIPS, LOCAL_DIR, REPO_ROOT

    if docs_from is not None:
        return f"{write_versions_docs(docs_from, docs_dir or REPO_ROOT / 'docs')} rendered from {docs_from}"
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ConsumerError(f"--variant: unknown {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    work = work_dir or LOCAL_DIR / "kcl-compare" / "work"
    shutil.rmtree(work, ignore_errors=True)
    output = output or LOCAL_DIR / "kcl-compare" / "kcl-compare.json"
    run_comparison(
        CompareConfig(output=output, work_dir=work, variants=variants or tuple(VARIANTS)), trips=trips or DEFAULT_TRIPS
    )
    return f"report: {output}"
