"""The comparison's side-by-side table, and docs/kcl-versions.md rendered from a report
(``python -m consumer kcl-compare --docs-from REPORT.json``).

The page is fixed text around the report's figures; the report is committed next to it as docs/kcl-versions.json.
A unit test renders the committed JSON and compares it with the committed page: the figures are never edited by hand.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from consumer.errors import ConsumerError

__all__ = ["DOC_NAME", "REPORT_NAME", "render_versions_doc", "versions_table", "write_versions_docs"]

DOC_NAME = "kcl-versions.md"
REPORT_NAME = "kcl-versions.json"

Row = tuple[str, Callable[[dict[str, Any]], Any]]


def _get(*path: str) -> Callable[[dict[str, Any]], Any]:
    def get(variant: dict[str, Any]) -> Any:
        value: Any = variant
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    return get


ROWS: list[Row] = [
    ("Jars (amazon-kclpy release)", lambda v: f"{v['jars']} ({v['amazon_kclpy']})"),
    (
        "Cold start, new lease table: daemon start → every shard's first batch (s)",
        _get("phases", "cold_start", "daemon_start_to_every_shard_seconds"),
    ),
    (
        "Lease taken → first batch, median over the shards (s)",
        _get("phases", "cold_start", "lease_to_first_batch_median_seconds"),
    ),
    (
        "A second worker joins: its first batch after its start (s)",
        _get("phases", "join", "start_to_first_batch_seconds"),
    ),
    ("A second worker joins: leases balanced after its start (s)", _get("phases", "join", "start_to_balanced_seconds")),
    ("A second worker joins: records written twice", _get("phases", "join", "duplicated")),
    (
        "SIGTERM of a worker: the other's first batch of each of its shards (s)",
        _get("phases", "sigterm", "takeover_seconds"),
    ),
    ("SIGTERM of a worker: records written twice", _get("phases", "sigterm", "duplicated")),
    ("SIGKILL of a worker, not the leader: takeover (s)", _get("phases", "sigkill_worker", "takeover_seconds")),
    ("SIGKILL of a worker, not the leader: records written twice", _get("phases", "sigkill_worker", "duplicated")),
    (
        "SIGKILL of the leader (KCL 2.x: of the first worker): takeover (s)",
        _get("phases", "sigkill_leader", "takeover_seconds"),
    ),
    ("SIGKILL of the leader: records written twice", _get("phases", "sigkill_leader", "duplicated")),
    ("Daemon RSS under load (MB)", _get("phases", "steady", "daemon_rss_mb")),
    ("Daemon CPU per 1,000 rides (CPU-seconds)", _get("phases", "steady", "daemon_cpu_seconds_per_1000_rides")),
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 1 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _title(key: str, variant: dict[str, Any]) -> str:
    """The variant's title as the project names it now (which one ships may have changed since the run)."""
    from consumer.tools.kclcompare.variants import VARIANTS

    return VARIANTS[key].title if key in VARIANTS else str(variant["title"])


def versions_table(report: dict[str, Any]) -> list[str]:
    """The side-by-side Markdown table: one row per figure, one column per variant."""
    variants = report["variants"]
    lines = [
        "| | " + " | ".join(_title(key, variant) for key, variant in variants.items()) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for label, get in ROWS:
        lines.append(f"| {label} | " + " | ".join(_cell(get(variant)) for variant in variants.values()) + " |")
    return lines


_INTRO = """\
# KCL versions: what the daemon's version costs

<!-- Generated from docs/kcl-versions.json by `make kcl-compare-docs`; do not edit: a unit test checks that this page
is what that report renders (consumer/tools/kclcompare/report.py). -->

The service ships the KCL {shipped_kcl} MultiLangDaemon (amazon-kclpy {shipped_kclpy}). This page is how that version
was chosen: the newest KCL 3.x and the newest KCL 2.x that resolve from Maven Central, measured side by side by the
comparison the project ships (`make kcl-compare`, `python -m consumer kcl-compare`): each runs the real daemon
through `python -m consumer run` against the local stack (kinesis-local and dynalite), one variant after the other
on the same machine, on the same timeline. **Absolute figures depend on the machine**; the run's machine and load are
at the end, and its whole report is [kcl-versions.json](kcl-versions.json). What a move to KCL 3 would take is in
[deploying.md](deploying.md#moving-to-kcl-3-later).

## What is measured

A stream of {shards} shards, two workers (`python -m consumer run`, worker ids `worker-a` and `worker-b`),
`failoverTimeMillis` {failover} ms, polling every {idle} ms, rides put at {rate} a second during the loaded
phases, the ledger judging every phase (every record accounted for before the next phase starts, so that each
phase's duplicates are its own):

1. **Cold start**: worker A alone on a new application, records waiting on every shard; from the daemon's start to
   every shard's first batch, and per shard from its lease (the daemon's log) to its first batch. KCL 3 runs on a
   lease table the tools created with its index (the local DynamoDB cannot add it); KCL 2.7.2 creates its own.
   KCL 3 runs with `disableWorkerMetrics = true` and `clientVersionConfig = CLIENT_VERSION_CONFIG_3X` (nothing here
   may probe instance metadata; a new application).
2. **Steady load** on worker A alone for {steady} s: the daemon's CPU-seconds per 1,000 rides and its RSS
   (`-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1`, the local stack's options).
3. **A second worker joins** under load: until its first batch, until the leases are balanced, and the records
   written twice while the leases move.
4. **SIGTERM of a worker** under load (a rolling update): until the other worker has had a batch of each of its
   shards, and the records written twice.
5. **SIGKILL of a worker** that does not hold KCL 3's leader lock, and
6. **SIGKILL of the leader** (KCL 2.x has no leader: the worker that started first): until the survivor has had a
   batch of each of the victim's shards, and the records written twice.

## Side by side

"""

_RERUN = """
## Re-running it

```
make kcl-compare       # every variant (about {minutes} minutes): the table on stdout, the report in .local/kcl-compare/
make kcl-compare-docs  # this page and docs/kcl-versions.json from .local/kcl-compare/kcl-compare.json
```

Run it alone on the machine (`flock /tmp/heavy-tests.lock make kcl-compare` here). The KCL 3.1.3 jars come from
their own lock, `kcl/kclpy-3.1.3/kcl-jars.lock` (`make kcl-lock-compare`), with the same security overrides as the
shipped set; they are never installed into the service.
"""


def _when(started_at: str) -> str:
    return datetime.fromisoformat(started_at).strftime("%Y-%m-%d %H:%M UTC")


def _decision(report: dict[str, Any]) -> list[str]:
    """The choice, with the figures it rests on taken from the report."""
    from consumer.tools.kclcompare.decision import decision_lines

    return decision_lines(report)


def render_versions_doc(report: dict[str, Any]) -> str:
    """docs/kcl-versions.md for ``report`` (a comparison report as written to its JSON)."""
    from consumer.tools.kclcompare.decision import SHIPPED

    shipped = report["variants"][SHIPPED]
    setup, machine = report["setup"], report["machine"]
    intro = _INTRO.format(
        shipped_kcl=shipped["kcl"],
        shipped_kclpy=shipped["amazon_kclpy"],
        shards=setup["shards"],
        failover=f"{setup['failover_time_millis']:,}",
        idle=setup["idle_time_between_reads_ms"],
        rate=setup["rate_per_second"],
        steady=f"{setup['steady_seconds']:g}",
    )
    minutes = round((machine.get("seconds") or 0) / 60)
    lines = [
        intro + "\n".join(versions_table(report)),
        "",
        *_decision(report),
        _RERUN.format(minutes=minutes or "?"),
        "## The run",
        "",
        f"Run on {_when(machine['started_at'])}: {machine['cpus']} CPUs, load average "
        f"{machine['load_before'][0]:.2f} before and {machine.get('load_after', [0.0])[0]:.2f} after, "
        f"{machine['platform']}.",
        "",
    ]
    return "\n".join(lines)


def write_versions_docs(report_path: Path, docs_dir: Path) -> Path:
    """Copy the report to ``docs_dir``/kcl-versions.json (unless it is that file) and render kcl-versions.md. A
    report without both the shipped KCL 3 and KCL 2.x is refused: the page compares them."""
    report = orjson.loads(report_path.read_bytes())
    missing = {"kcl3", "kcl2"} - set(report.get("variants", {}))
    if missing:
        raise ConsumerError(f"{report_path} lacks the variants {sorted(missing)}; the page compares them")
    docs_dir.mkdir(parents=True, exist_ok=True)
    committed = docs_dir / REPORT_NAME
    if not (committed.exists() and committed.samefile(report_path)):
        shutil.copyfile(report_path, committed)
    page = docs_dir / DOC_NAME
    page.write_text(render_versions_doc(report))
    return page
