"""The metrics soak (``python -m consumer bench --soak``, ``make soak``): thousands of shard-process lifetimes
against one metrics folder, with the launcher's compaction and without, and how long ``/metrics`` and
``/healthz`` take as the lifetimes add up. Its page, docs/metrics-soak.md, is rendered from its report
(``make soak-docs``), which is committed next to it; a unit test checks the page against the report.

One lifetime is what lease churn (a rebalancing, a rolling update, KEDA scaling) costs the folder: a process
forked from a stand-in for the fork server (everything imported once, as in production) gains a lease, records a
batch and ends, by exiting (its exit handler removes its live gauges) or killed (one in ``killed_every``: nothing
removed). The launcher's real HTTP server (consumer/runtime/health.py) serves the folder on loopback; the kubelet's
liveness probe is played every ``probe_every`` lifetimes, and every ``sample_every`` lifetimes ``/metrics`` and
``/healthz`` are timed ``requests`` times each (medians reported).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from consumer.tools.bench.config import machine_facts, say

__all__ = ["SOAK_DOC", "SOAK_REPORT", "SoakConfig", "render_soak_doc", "run_soak", "write_soak_docs"]

SOAK_DOC = "metrics-soak.md"
SOAK_REPORT = "metrics-soak.json"

#: The stand-in fork server: imports the shard's metrics once, then forks one lifetime per line it reads ("exit"
#: or "kill"), waits for it and answers "done".
_ZYGOTE = """
import os, signal, sys
from prometheus_client.multiprocess import mark_process_dead
from consumer.pipeline.meter import ShardMetrics
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        meter = ShardMetrics.create().for_shard("shardId-%012d" % (os.getpid() % 4))
        meter.lease_gained()
        meter.batch_received(100, 250)
        meter.batch_done(predictions=99, dead_letter_reasons=["not_json"], newest_arrival_millis=1, seconds=0.05)
        meter.checkpointed()
        meter.lease_dropped()
        if line.strip() == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        mark_process_dead(os.getpid())
        os._exit(0)
    os.waitpid(pid, 0)
    print("done", flush=True)
"""


@dataclass(frozen=True)
class SoakConfig:
    lifetimes: int = 5_000
    sample_every: int = 250
    probe_every: int = 10
    requests: int = 5
    killed_every: int = 4


class _Running:
    """The daemon as the launcher's state sees it: running."""

    def poll(self) -> int | None:
        return None


def _timed_get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        size = len(response.read())
    return time.perf_counter() - started, size


def _soak_one(config: SoakConfig, folder: Path, *, compact: bool) -> list[dict[str, Any]]:
    from consumer.runtime.health import HealthServer, LauncherState
    from consumer.runtime.metricsfolder import MetricsFolder

    metrics = MetricsFolder(folder, compact=compact)
    metrics.empty()
    state = LauncherState(folder, metrics=metrics)
    state.daemon_started(_Running())
    server = HealthServer(state, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{server.port}"
    zygote = subprocess.Popen(
        [sys.executable, "-c", _ZYGOTE],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    samples: list[dict[str, Any]] = []
    try:
        for lifetime in range(1, config.lifetimes + 1):
            zygote.stdin.write("kill\n" if lifetime % config.killed_every == 0 else "exit\n")
            zygote.stdin.flush()
            if zygote.stdout.readline() != "done\n":
                raise RuntimeError(f"the soak's zygote stopped (status {zygote.poll()})")
            if lifetime % config.probe_every == 0:
                _timed_get(base + "/healthz")
            if lifetime % config.sample_every == 0:
                scrapes = [_timed_get(base + "/metrics") for _ in range(config.requests)]
                probes = [_timed_get(base + "/healthz")[0] for _ in range(config.requests)]
                samples.append(
                    {
                        "lifetimes": lifetime,
                        "files": sum(1 for _ in folder.glob("*.db")),
                        "metrics_ms": statistics.median(seconds for seconds, _ in scrapes) * 1000,
                        "metrics_bytes": scrapes[-1][1],
                        "healthz_ms": statistics.median(probes) * 1000,
                    }
                )
                say(f"soak {'with' if compact else 'without'} compaction: {samples[-1]}")
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=60)
        server.stop()
    return samples


def run_soak(config: SoakConfig, output: Path, work_dir: Path | None = None) -> dict[str, Any]:
    """Both modes, one after the other; the report written to ``output`` as JSON, and returned."""
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine_facts(),
        "config": asdict(config),
    }
    with tempfile.TemporaryDirectory(prefix="consumer-soak-", dir=work_dir) as temporary:
        for mode, compact in (("compaction", True), ("no_compaction", False)):
            report[mode] = _soak_one(config, Path(temporary) / mode, compact=compact)
    report["machine"].update(load_after=list(os.getloadavg()), seconds=time.perf_counter() - started)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


_INTRO = """\
# Metrics soak

<!-- Generated from docs/metrics-soak.json by `make soak-docs`; do not edit: a unit test checks that this page is
what that report renders (consumer/tools/bench/soak.py). -->

Every lease starts a new shard process, and every shard process writes its metrics to files of its own in
`PROMETHEUS_MULTIPROC_DIR`. Without compaction, the counter and histogram files of every process that ever ran
stay, and every `/metrics` scrape reads all of them (`/healthz` reads only the live processes' gauges, but lists
the whole folder); the launcher compacts them ([operating.md](operating.md#metrics)). This soak plays lease churn
against one folder, with compaction and without: **{lifetimes:,} process lifetimes** (one in {killed_every} killed
instead of exiting), forked from a stand-in for the fork server; the liveness probe every {probe_every} lifetimes,
and every {sample_every} lifetimes the median of {requests} `/metrics` scrapes and {requests} `/healthz` probes of
the launcher's own HTTP server on loopback. Absolute figures depend on the machine; the run is described at the
end.

```
make soak        # .venv/bin/python -m consumer bench --soak: the table, the report in .local/bench/soak.json
make soak-docs   # this page and docs/metrics-soak.json from .local/bench/soak.json
```
"""


def _table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| Lifetimes | Files, compacted | /metrics ms, compacted | /healthz ms, compacted "
        "| Files, not compacted | /metrics ms, not compacted | /healthz ms, not compacted |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for on, off in zip(report["compaction"], report["no_compaction"], strict=True):
        lines.append(
            f"| {on['lifetimes']:,} | {on['files']:,} | {on['metrics_ms']:.1f} | {on['healthz_ms']:.1f} "
            f"| {off['files']:,} | {off['metrics_ms']:.1f} | {off['healthz_ms']:.1f} |"
        )
    return lines


def render_soak_doc(report: dict[str, Any]) -> str:
    """docs/metrics-soak.md for ``report`` (as :func:`run_soak` writes it)."""
    machine = report["machine"]
    when = datetime.fromisoformat(machine["started_at"]).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            _INTRO.format(**report["config"]),
            "## Figures",
            "",
            *_table(report),
            "",
            "## The run",
            "",
            f"Run on {when}: {machine['cpus']} CPUs, load average {machine['load_before'][0]:.2f} before and "
            f"{machine['load_after'][0]:.2f} after; {machine['seconds']:.0f} s in all. Python {machine['python']} "
            f"on {machine['platform']}.",
            "",
        ]
    )


def write_soak_docs(report_path: Path, docs_dir: Path) -> Path:
    """Copy the report to ``docs_dir``/metrics-soak.json (unless it is that file) and render the page from it."""
    report = orjson.loads(report_path.read_bytes())
    docs_dir.mkdir(parents=True, exist_ok=True)
    committed = docs_dir / SOAK_REPORT
    if not (committed.exists() and committed.samefile(report_path)):
        committed.write_bytes(report_path.read_bytes())
    page = docs_dir / SOAK_DOC
    page.write_text(render_soak_doc(report))
    return page
