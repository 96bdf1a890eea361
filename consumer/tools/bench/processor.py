"""The processor through the real MultiLang protocol: ``record_processor.py`` fed ``processRecords`` at full speed,
every checkpoint answered, through the fork server as in production, writing to the emulator and to a null sink.

Sections: **processor** (the compiled model and the sklearn pipeline, each to both sinks), **batch_size**
(``processRecords`` of 100 ... 10,000 records), **shards** (processors side by side) and **cold_start** (a new
record processor, forked and plain, from its start to its first batch written). Rides per second of wall time,
and per CPU-second of the process that scores (the figure per core).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from consumer.runtime.forkserver import ForkServer
from consumer.tools.bench.accounting import cpu_seconds
from consumer.tools.bench.config import BenchConfig, say
from consumer.tools.bench.model import BenchModel
from consumer.tools.bench.rides import Rides
from consumer.tools.bench.stats import summary
from consumer.tools.multilang import MultiLangDriver, process_records_message

__all__ = [
    "OUTPUT_SHARDS",
    "Processors",
    "batch_size_section",
    "cold_start_section",
    "processor_base_env",
    "processor_section",
    "shards_section",
]

#: Shards of the prediction stream when the processors write to the emulator (1,000 records/s each).
OUTPUT_SHARDS = 4


def _batches(rides: Rides, total: int, size: int, *, start_id: int = 1) -> list[bytes]:
    payloads = rides.cycle(total, start_id=start_id)
    return [
        process_records_message(payloads[i : i + size], 49_000_000_000_000 + start_id + i)
        for i in range(0, total, size)
    ]


def _shard_id(shard: int) -> str:
    return f"shardId-{shard:012d}"


def processor_base_env(stack: Any, work_dir: Path) -> dict[str, str]:
    """The environment of a record processor against ``stack``, with output streams of its own."""
    suffix = uuid.uuid4().hex[:6]
    outputs = {"PREDICTIONS_STREAM_NAME": f"bench-out-{suffix}", "DEAD_LETTER_STREAM_NAME": f"bench-dead-{suffix}"}
    for name in outputs.values():
        stack.create_stream(name, 1)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KCL_", "MLFLOW_"))}
    env.update(stack.env())
    env.update(outputs)
    env.update(
        INPUT_STREAM_NAME=f"bench-in-{suffix}",
        KCL_APPLICATION_NAME=f"bench-{suffix}",
        MODEL_URI="bench://prepared",
        PROMETHEUS_MULTIPROC_DIR=str(work_dir / "metrics"),
    )
    (work_dir / "metrics").mkdir(parents=True, exist_ok=True)
    return env


@dataclass
class Processors:
    """Environments for record processors against the stack, and the fork servers started for them."""

    base_env: dict[str, str]
    work_dir: Path
    stack: Any
    servers: list[ForkServer] = field(default_factory=list)
    count: int = 0

    def env(self, prepared: Path, *, null_sink: bool) -> dict[str, str]:
        """With the emulator as sink, new output streams each time: kinesis-local slows down as a stream grows,
        and a shard takes 1,000 records a second (as in AWS), so the predictions get :data:`OUTPUT_SHARDS`."""
        env = {**self.base_env, "PREPARED_MODEL_DIR": str(prepared)}
        if null_sink:
            env["BENCH_DISCARD_OUTPUT"] = "true"
            return env
        suffix = uuid.uuid4().hex[:6]
        env.update(PREDICTIONS_STREAM_NAME=f"bench-out-{suffix}", DEAD_LETTER_STREAM_NAME=f"bench-dead-{suffix}")
        self.stack.create_stream(env["PREDICTIONS_STREAM_NAME"], OUTPUT_SHARDS)
        self.stack.create_stream(env["DEAD_LETTER_STREAM_NAME"], 1)
        return env

    def fork_server(self, env: dict[str, str]) -> ForkServer:
        from consumer.runtime.forkserver import start

        server = start(env, self.work_dir / f"fork-server-{len(self.servers)}")
        self.servers.append(server)
        return server

    def driver(self, env: dict[str, str], server: ForkServer | None) -> MultiLangDriver:
        """A new record processor (through ``server``, or plain), its stderr kept in the work folder."""
        self.count += 1
        return MultiLangDriver(env, fork_server=server, stderr_path=self.work_dir / f"processor-{self.count}.stderr")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _drive(driver: MultiLangDriver, worker: psutil.Process, batches: Sequence[bytes], rides: int) -> dict[str, Any]:
    cpu_before = cpu_seconds(worker)
    started = time.perf_counter()
    for message in batches:
        driver.process_records(message)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(worker) - cpu_before
    return {
        "rides": rides,
        "seconds": seconds,
        "rides_per_second": rides / seconds,
        "cpu_seconds": cpu,
        "rides_per_cpu_second": rides / cpu if cpu > 0 else None,
    }


def _throughput(
    processors: Processors, env: dict[str, str], server: ForkServer | None, rides: Rides, total: int, size: int
) -> dict[str, Any]:
    """One processor: initialize, a warm-up batch, then ``total`` rides in batches of ``size`` at full speed."""
    driver = processors.driver(env, server)
    try:
        driver.initialize(_shard_id(0))
        worker = driver.worker()
        driver.process_records(_batches(rides, min(size, 100), min(size, 100), start_id=10_000_000)[0])
        return _drive(driver, worker, _batches(rides, total, size), total)
    finally:
        driver.close()


def processor_section(config: BenchConfig, processors: Processors, model: BenchModel, rides: Rides) -> dict[str, Any]:
    variants = {
        "onnx_null_sink": (model.prepared, True),
        "onnx_emulator": (model.prepared, False),
        "sklearn_null_sink": (model.prepared_sklearn, True),
        "sklearn_emulator": (model.prepared_sklearn, False),
    }
    section: dict[str, Any] = {"batch_size": 1_000, "fork_server": True}
    for name, (prepared, null_sink) in variants.items():
        # kinesis-local writes about a thousand records a second: fewer rides give the same figure there
        total = config.rides_per_run if null_sink else max(config.rides_per_run // 4, 2_000)
        say(f"processor {name}: {config.runs} x {total} rides")
        runs = []
        for _ in range(config.runs):
            env = processors.env(prepared, null_sink=null_sink)  # new output streams for each emulator run
            runs.append(_throughput(processors, env, processors.fork_server(env), rides, total, 1_000))
        section[name] = summary(runs, "rides_per_second", extra=("rides_per_cpu_second",))
    return section


def batch_size_section(
    config: BenchConfig, processors: Processors, model: BenchModel, rides: Rides
) -> list[dict[str, Any]]:
    env = processors.env(model.prepared, null_sink=True)
    server = processors.fork_server(env)
    rows = []
    for size in config.batch_sizes:
        total = max(config.rides_per_run, size * 2)
        say(f"batch size {size}: {config.runs} x {total} rides (null sink)")
        runs = [_throughput(processors, env, server, rides, total, size) for _ in range(config.runs)]
        rows.append({"max_records": size, **summary(runs, "rides_per_second", extra=("rides_per_cpu_second",))})
    return rows


def shards_section(
    config: BenchConfig, processors: Processors, model: BenchModel, rides: Rides
) -> list[dict[str, Any]]:
    env = processors.env(model.prepared, null_sink=True)
    server = processors.fork_server(env)
    rows = []
    for count in config.shard_counts:
        say(f"{count} processors side by side: {config.runs} x {count} x {config.rides_per_run} rides (null sink)")
        runs = [_side_by_side(processors, env, server, rides, count, config.rides_per_run) for _ in range(config.runs)]
        rows.append({"shards": count, **summary(runs, "rides_per_second", extra=("rides_per_second_per_shard",))})
    return rows


def _side_by_side(
    processors: Processors, env: dict[str, str], server: ForkServer, rides: Rides, count: int, per_shard: int
) -> dict[str, Any]:
    drivers = [processors.driver(env, server) for _ in range(count)]
    try:
        for shard, driver in enumerate(drivers):
            driver.initialize(_shard_id(shard))
        batches = [_batches(rides, per_shard, 1_000, start_id=1 + shard * per_shard) for shard in range(count)]
        barrier = threading.Barrier(count + 1)

        def feed(driver: MultiLangDriver, messages: list[bytes]) -> None:
            barrier.wait()
            for message in messages:
                driver.process_records(message)

        threads = [
            threading.Thread(target=feed, args=(driver, messages))
            for driver, messages in zip(drivers, batches, strict=True)
        ]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    finally:
        for driver in drivers:
            driver.close()
    total = count * per_shard
    return {
        "rides": total,
        "seconds": seconds,
        "rides_per_second": total / seconds,
        "rides_per_second_per_shard": total / seconds / count,
    }


def cold_start_section(config: BenchConfig, processors: Processors, model: BenchModel, rides: Rides) -> dict[str, Any]:
    """A new record processor: from its start to its first batch (100 rides) written, forked and plain, to the
    emulator and to the null sink (the emulator's own time apart)."""
    section: dict[str, Any] = {"batch": 100}
    for sink, null_sink in (("emulator", False), ("null_sink", True)):
        env = processors.env(model.prepared, null_sink=null_sink)
        server = processors.fork_server(env)
        for mode, fork_server in (("fork_server", server), ("plain_process", None)):
            runs = []
            for _ in range(max(config.runs, 3)):
                batch = _batches(rides, 100, 100)[0]
                driver = processors.driver(env, fork_server)
                started = driver.started_at
                driver.initialize(_shard_id(0))
                initialized = time.time()
                written = driver.process_records(batch)
                driver.close()
                runs.append({"seconds": written - started, "start_to_initialized_seconds": initialized - started})
            section[f"{mode}_{sink}"] = summary(runs, "seconds", extra=("start_to_initialized_seconds",))
    return section
