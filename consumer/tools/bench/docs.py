"""docs/performance.md, rendered from a benchmark report (``python -m consumer bench --docs-from REPORT.json``).

The page is the report's tables under a fixed text that says what each section measures and how to re-run it; the
report is committed next to it as docs/performance.json, so every figure lives in that one file. A test renders
the committed JSON and compares it with the committed page: the figures are never edited by hand.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from consumer.errors import ConsumerError
from consumer.tools.bench.charts import CHARTS, charts_of, draw_charts
from consumer.tools.bench.per_core import SHARD_WRITE_LIMIT, write_limit_table
from consumer.tools.bench.pod_cpu import SUSTAINED_DRAIN_SECONDS, pod_cpu_tables
from consumer.tools.bench.report import (
    batch_size_table,
    batch_table,
    figures_table,
    goals_table,
    machine_line,
    shards_table,
    web_table,
)

__all__ = ["CHART_DIR", "CHART_PREFIX", "DOC_NAME", "REPORT_NAME", "render_performance_doc", "write_performance_docs"]

#: The page and its report, in the docs folder; the charts in its img/ folder (``performance-<chart>.png``).
DOC_NAME = "performance.md"
REPORT_NAME = "performance.json"
CHART_DIR = "img"
CHART_PREFIX = "performance"

_INTRO = """\
# Performance

<!-- Generated from docs/performance.json by `make bench-docs`; do not edit: a unit test checks that this page is
what that report renders (consumer/tools/bench/docs.py). -->

What the service does on one machine, measured by the benchmark the project ships (`make bench`, or
`.venv/bin/python -m consumer bench`): everything runs locally against the emulators (kinesis-local and dynalite),
in one run, on the same held-out rides, the last week of the January 2022 TLC file, which the model never saw.
**Absolute figures depend on the machine and on what else runs on it**: the run's machine, load average and date
are at the end of this page, and its whole report, runs included, is [performance.json](performance.json).

## What is measured

- **The Lambda-style baseline** (`lambda_baseline`): what the Lambda this service replaces did, record by record:
  base64 and JSON decode, one MLflow pyfunc `predict` of one ride, one `put_record` to the emulator. The forest is
  the registered one, logged with `n_jobs=1` (the Lambda at its best); the seed's forest had `n_jobs=-1`, which
  starts a thread pool for every one-ride predict, and is shown for reference.
- **The processor through the MultiLang protocol** (`processor`): `record_processor.py` through the fork server,
  as in production, fed `processRecords` messages of 1,000 rides at full speed, every checkpoint answered; with the
  compiled (ONNX) model and with the sklearn pipeline; writing to the emulator (new 4-shard output streams each
  run) and to a **null sink** (`BENCH_DISCARD_OUTPUT=true`, refused unless the Kinesis endpoint is a loopback
  address), so that the emulator's own cost is visible. Rides per second of wall time, and per CPU-second of the
  process that scores (the figure per core); the ratio to the Lambda-style path.
- **Batch size** (`batch_size`) and **shards** (`shards`): the same with `processRecords` of 100 to 10,000 records
  (`KCL_MAX_RECORDS`), and with processors side by side (null sink).
- **Cold start** (`cold_start`): a new record processor, forked by the fork server and as a plain process, from
  its start to its first 100 predictions written.
- **The daemon** (`daemon`): `python -m consumer run` with the real KCL daemon (polling every 250 ms), with the
  fork server and without (`SHARD_FORK_SERVER=false`): latency from a ride's arrival on the input stream to its
  prediction's arrival on the output stream (both stamped by the emulator) at steady rates, with the CPU the
  emulator and the consumer use meanwhile; each shard's steps from its lease to its first prediction (the daemon's
  own steps from its log); RSS, PSS and USS of every process of the pod. USS is what one more shard adds; RSS
  counts every page a worker shares with the fork server again in each process.
- **The pod's CPU by process** (`daemon.*.pod_cpu`): user plus system CPU-seconds of each process of the pod (the
  launcher, the daemon (java), the fork server, the record processors, the workers), read from `/proc/<pid>/stat` at the
  start and the end of each window, the daemon's JIT compiler threads (`jit`, from `/proc/<pid>/task/<tid>/stat`) apart
  from the rest of the daemon. After a warm-up that is not measured (the JVM compiles its hot code), one window per
  rate, from the first put to the last prediction out, the rates from low to high (the emulator slows as its streams
  fill): the latency rates, and the ceiling's rates while every rate before was sustained (the put rate at least 95 % of
  the rate asked, and the last prediction out at most {drain:g} s after the last put); then an idle window (the leases
  held, no rides put). Below the write limit the pod's CPU follows its polls and batches more than its rides (a shard
  polled every 250 ms at a few dozen rides/s gets batches of a few rides, and a slowed emulator answers fewer polls), so
  these windows show what the pod spends per second at each rate, not a cost per ride to extrapolate from. A latency
  figure at a rate the producer could not put says the rate it did put: the emulator (one Node process) is the ceiling
  here, not the pod.
- **The pod at the write limit** (`daemon.fork_server.write_limit`): what the shards per core come from. A shard at
  1,000 records/s brings, with the production settings (one GetRecords a second, up to 1,000 records each), batches
  of about 1,000 rides; the batches of the rates above (a few to a few dozen rides, polled every 250 ms) say little
  about them, and the emulator can neither take 1,000 records/s per shard here nor serve a backlog at that pace
  while it also takes the predictions back. So a backlog of rides is put on fresh streams first, and a pod with the
  fork server and the production settings (the JVM's options included) reads it in full batches, discarding its
  predictions (`BENCH_DISCARD_OUTPUT`): after a first part unmeasured, the pod's CPU by process until its metrics
  count the whole backlog (read by the benchmark from the pod's metrics folder, not through the launcher's
  /metrics, whose every read costs the launcher CPU), then an idle window with the same settings, what one read of
  /metrics costs, and an idle window of a second pod with more shards leased and no rides (it splits the daemon's
  idle cost: below). The window's rides are the batches
  finished in it, from the pod's own metrics, less one batch per shard (those in flight when it opened, part of
  whose CPU was spent before): the cost per ride errs high. What writing the predictions costs is the processor
  section's (emulator sink less null sink, per CPU-second, batches of 1,000), added to the workers.
- **The batch command** (`batch`): `python -m consumer score` on the January 2022 file as it is and with its rows
  repeated 8 times, the real command in a subprocess with the benchmark's model already prepared: rows per second
  and per CPU-second of its scoring (model preparation excluded: its own summary, `--json`), and its peak RSS
  (MLflow's import for the preparation included), which stays flat as the file grows: it streams record batches.
- **The web endpoint** (`web`): `python -m consumer serve` with 2 workers under [vegeta](https://github.com/tsenart/vegeta)
  (`scripts/install_vegeta.sh` builds it with Go), which sends requests at a fixed rate whatever the answers'
  latency (an open loop, so its latency is what a caller sees): one held-out ride per `POST /predict` at each
  rate, lists of rides, and as fast as 16 connections go (the ceiling on this machine, vegeta's own CPU included:
  it shares the 2 cores). Latency quantiles, the rate achieved, the share of 200s, the server's CPU (requests per
  CPU-second) and memory.
- **The model** (`model`): the compiled fast path against the sklearn pipeline on every held-out ride.
- **Goals** (`goals`): the issue's goals, checked against these figures (never in tests: figures depend on the
  machine).

Figures are medians of the runs (the daemon part runs once per mode).

**Shards per core.** A shard brings at most L = {limit:,} records/s (AWS's write limit). With every term in ms of CPU
per second (1,000 = one core busy): F, the pod's fixed cost (the launcher, the fork server, the part of the
daemon's idle cost that does not grow with shards, and Prometheus's reads of /metrics at the PodMonitor's interval);
I, the idle cost of what grows with shards (the rest of the daemon's: its polls and lease renewals; the record
processors, the workers), measured with S shards leased; C, the pod's CPU per 1,000 rides, every process included.
One shard at the write limit costs I / S + C x L / 1,000, so one core keeps up with

    N = (1,000 - F) / (I / S + C x L / 1,000)

shards. I and F come from the write-limit run's idle window and C from its backlog, above idle, with the put's cost.
At the limit every poll brings records, so a shard's polls are counted in I / S and what their records add in C. The
daemon's idle cost is split in two by a second pod with more shards leased and no rides, idle as long: with d(S) its
idle cost with S shards, d(S) = fixed + per shard x S through the two windows; the fixed part goes in F, the rest in
I. (A pair that would make either part negative, noise, is clamped: all of it per shard, or all of it fixed.) The
daemon's share is its part of the core at N shards: its fixed part plus N times its own I / S and C x L / 1,000.

N is given twice. The JVM compiles its hot code in its JIT compiler threads for minutes after it starts, at every
load it meets for the first time, and the benchmark's windows all fall in those minutes: the compilers' CPU is
counted apart from the rest of the daemon (the threads /proc names `C1 CompilerThread*` and `C2 CompilerThread*`).
**Warmed**, the goal's figure, leaves it out: what a pod that has run for a while spends. Its code in the windows is
still partly unoptimised, so it errs high. **As measured** counts it: what a pod spends in its first minutes, which
the CPU limit (not the request) has to cover.

## Re-running it

```
make bench                      # the tables on stdout, the report in .local/bench/bench.json
make bench-docs                 # this page and docs/performance.json from .local/bench/bench.json
make bench BENCH_ARGS=--quick   # a short smoke of every section (tests/e2e/test_bench.py); not for this page
```

`make bench-docs BENCH_JSON=path/to/report.json` renders another report; it refuses a quick one. Run it with no
other heavy work on the machine, and commit both files.
"""


def _when(started_at: str) -> str:
    return datetime.fromisoformat(started_at).strftime("%Y-%m-%d %H:%M UTC")


def render_performance_doc(report: dict[str, Any]) -> str:
    """docs/performance.md for ``report`` (a benchmark report as written to its JSON)."""
    machine = report["machine"]
    lines = [
        _INTRO.format(limit=SHARD_WRITE_LIMIT, drain=SUSTAINED_DRAIN_SECONDS),
        "## Goals",
        "",
        *goals_table(report),
        "",
        "## Figures",
        "",
        *figures_table(report),
        "",
        "### The pod's CPU by process",
        "",
        *pod_cpu_tables(report),
        "",
        *write_limit_table(report),
        "",
        "### Charts",
        "",
        *(line for chart in _charts(report) for line in (chart, "")),
        "### Batch size",
        "",
        *batch_size_table(report),
        "",
        "### Shards",
        "",
        *shards_table(report),
        "",
        "### The batch command",
        "",
        *batch_table(report),
        "",
        "### The web endpoint",
        "",
        *web_table(report),
        "",
        "## The run",
        "",
        f"Run on {_when(machine['started_at'])}: {machine_line(report)} Python {machine['python']} on "
        f"{machine['platform']}.",
        "",
    ]
    return "\n".join(lines)


def _charts(report: dict[str, Any]) -> list[str]:
    return [f"![{CHARTS[name]}]({CHART_DIR}/{CHART_PREFIX}-{name}.png)" for name in charts_of(report)]


def write_performance_docs(report_path: Path, docs_dir: Path) -> Path:
    """Copy the report at ``report_path`` to ``docs_dir``/performance.json (unless it is that file), draw its charts
    in ``docs_dir``/img/ and render ``docs_dir``/performance.md from it; the page's path. A quick run's report is
    refused."""
    report = orjson.loads(report_path.read_bytes())
    if report["machine"]["quick"]:
        raise ConsumerError(f"{report_path} is a quick run's report; the docs show a full run (`make bench`)")
    docs_dir.mkdir(parents=True, exist_ok=True)
    committed = docs_dir / REPORT_NAME
    if not (committed.exists() and committed.samefile(report_path)):
        shutil.copyfile(report_path, committed)
    draw_charts(report, docs_dir / CHART_DIR, CHART_PREFIX)
    page = docs_dir / DOC_NAME
    page.write_text(render_performance_doc(report))
    return page
