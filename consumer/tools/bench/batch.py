"""The **batch** section: ``python -m consumer score`` on the TLC month file, as a user runs it.

Each run is the real command in a subprocess, on the benchmark's model (prepared already: the command finds it in
the cache), with ``--json``: its summary gives the scoring's own wall time and CPU-seconds (model preparation
excluded), so rows per CPU-second is the figure per core. The file is scored as it is and, in a full run, repeated
into a bigger file too: the command streams record batches, so its peak memory (the subprocess's maximum RSS,
MLflow's import for the preparation included) should not grow with the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from consumer.tools.bench.config import BenchConfig, say
from consumer.tools.bench.model import BenchModel
from consumer.tools.bench.stats import summary

__all__ = ["batch_section"]


def _repeated(trips: str, times: int, work_dir: Path) -> Path:
    """The TLC file, its rows ``times`` over, under a TLC name (the ride ids' month comes from it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = Path(trips).name if "://" not in trips else "green_tripdata_2022-01.parquet"
    path = work_dir / f"x{times}" / name
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(trips)
    pq.write_table(pa.concat_tables([table] * times), path, row_group_size=128 * 1024)
    return path


def _score_once(model: BenchModel, source: Path, output: Path, work_dir: Path) -> dict[str, Any]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MLFLOW_"))}
    env.update(
        MODEL_URI=model.uri,
        MLFLOW_TRACKING_URI=model.tracking_uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        MODEL_CACHE_DIR=str(model.prepared.parent),
        LOG_LEVEL="WARNING",
    )
    command = [sys.executable, "-m", "consumer", "score", "--json", "--input", str(source), "--output", str(output)]
    log = work_dir / "score.log"
    with log.open("ab") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr)
        assert process.stdout is not None
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"score failed ({process.returncode}); see {log}")
    result = orjson.loads(out)
    return {
        "rows": result["rows"],
        "scored": result["scored"],
        "seconds": round(result["seconds"], 3),
        "cpu_seconds": round(result["cpu_seconds"], 3),
        "rows_per_second": result["rows"] / result["seconds"],
        "rows_per_cpu_second": result["rows"] / result["cpu_seconds"],
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # kilobytes on Linux
    }


def batch_section(config: BenchConfig, model: BenchModel, trips: str) -> dict[str, Any]:
    """Rows per second and per CPU-second of the command, and its peak memory, for each file size."""
    work_dir = config.work_dir / "batch"
    work_dir.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, Any] = {}
    for times in config.batch_repeats:
        source = _repeated(trips, times, work_dir)
        say(f"batch: score on the month file x{times}, {config.runs} run(s)")
        runs = [_score_once(model, source, work_dir / f"out-x{times}.parquet", work_dir) for _ in range(config.runs)]
        sizes[f"x{times}"] = summary(
            runs, "rows_per_second", extra=("rows_per_cpu_second", "seconds", "cpu_seconds", "peak_rss_mb")
        ) | {"rows": runs[0]["rows"], "repeats": times}
    largest = sizes[f"x{max(config.batch_repeats)}"]
    return {
        "sizes": sizes,
        "rows_per_second": largest["rows_per_second"],
        "rows_per_cpu_second": largest["rows_per_cpu_second"],
        "batch_rows": 50_000,
    }
