"""One benchmark run: every section in order on the same held-out rides and model, the JSON written with its charts
beside it (``<stem>-<chart>.png``), the table printed. What each section measures is in its module (see the
package's docstring)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from consumer.tools.bench.batch import batch_section
from consumer.tools.bench.charts import draw_charts
from consumer.tools.bench.config import BenchConfig, machine_facts, say
from consumer.tools.bench.daemon import daemon_section
from consumer.tools.bench.lambda_baseline import lambda_section
from consumer.tools.bench.model import bench_model, model_section
from consumer.tools.bench.processor import (
    Processors,
    batch_size_section,
    cold_start_section,
    processor_base_env,
    processor_section,
    shards_section,
)
from consumer.tools.bench.report import SECTIONS, format_table, goals
from consumer.tools.bench.rides import heldout_rides
from consumer.tools.bench.web import web_section

__all__ = ["SECTIONS", "run_bench"]


@contextmanager
def _stack(work_dir: Path) -> Iterator[Any]:
    from consumer.tools.localstack import LocalStack

    with LocalStack(work_dir / "emulators") as stack:
        yield stack


def run_bench(config: BenchConfig, *, trips: str | None = None, out: IO[str] | None = None) -> dict[str, Any]:
    """Run every section, write the JSON to ``config.output``, print the table on ``out``; return the report."""
    from consumer.tools.paths import DEFAULT_TRIPS

    started = time.perf_counter()
    config.work_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": {**machine_facts(), "quick": config.quick, "runs": config.runs}}
    rides = heldout_rides(trips or DEFAULT_TRIPS)
    model = bench_model(config, trips or DEFAULT_TRIPS)
    report["model"] = model_section(model, rides)
    with _stack(config.work_dir) as stack:
        processors = Processors(processor_base_env(stack, config.work_dir), config.work_dir / "processors", stack)
        processors.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            report["processor"] = processor_section(config, processors, model, rides)
            report["batch_size"] = batch_size_section(config, processors, model, rides)
            report["shards"] = shards_section(config, processors, model, rides)
            report["cold_start"] = cold_start_section(config, processors, model, rides)
        finally:
            processors.stop()
        say(f"Lambda-style baseline: {config.runs} x {config.lambda_rides} rides")
        report["lambda_baseline"] = lambda_section(config, model, rides, stack)
    report["daemon"] = daemon_section(config, model, rides, report["processor"])
    report["batch"] = batch_section(config, model, trips or DEFAULT_TRIPS)
    report["web"] = web_section(config, model, rides)
    report["machine"].update(load_after=list(os.getloadavg()), seconds=time.perf_counter() - started)
    report["goals"] = goals(report)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    config.output.write_bytes(orjson.dumps({key: report[key] for key in SECTIONS}, option=orjson.OPT_INDENT_2))
    charts = draw_charts(report, config.output.parent, config.output.stem)
    print(format_table(report), file=out or sys.stdout)
    say(f"JSON written to {config.output}, charts to {', '.join(str(path) for path in charts)}")
    return report
