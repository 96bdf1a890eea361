"""docs/performance.md is rendered from docs/performance.json (``make bench-docs``): the figures live in the JSON
only, and nobody edits them on the page by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.errors import ConsumerError
from consumer.tools.bench import SECTIONS, render_performance_doc, write_performance_docs
from consumer.tools.bench.charts import CHARTS, charts_of
from consumer.tools.bench.per_core import write_limit_summary
from consumer.tools.bench.pod_cpu import pod_cpu_summary
from consumer.tools.paths import REPO_ROOT

DOCS = REPO_ROOT / "docs"
REPORT = DOCS / "performance.json"
PAGE = DOCS / "performance.md"


def test_the_committed_page_is_what_the_committed_report_renders():
    report = json.loads(REPORT.read_text())

    assert PAGE.read_text() == render_performance_doc(report), "run `make bench-docs BENCH_JSON=docs/performance.json`"


def test_the_committed_report_is_a_full_run_with_every_section():
    report = json.loads(REPORT.read_text())

    assert list(report) == list(SECTIONS)
    assert report["machine"]["quick"] is False
    assert set(report["daemon"]) == {"fork_server", "plain_processes"}


def test_the_page_shows_every_goal_the_run_and_how_to_rerun():
    report = json.loads(REPORT.read_text())

    page = render_performance_doc(report)

    for goal in report["goals"]:
        assert f"| {goal['figure']} |" in page
    assert report["machine"]["started_at"][:10] in page
    assert "make bench-docs" in page
    assert page.endswith("\n") and not page.endswith("\n\n")


def test_the_command_copies_the_report_and_renders_the_page(tmp_path: Path):
    source = tmp_path / "bench.json"
    source.write_bytes(REPORT.read_bytes())
    docs = tmp_path / "docs"

    assert main(["bench", "--docs-from", str(source), "--docs-dir", str(docs)]) == 0

    assert (docs / "performance.json").read_bytes() == REPORT.read_bytes()
    assert (docs / "performance.md").read_text() == PAGE.read_text()
    for name in charts_of(json.loads(REPORT.read_text())):
        assert (docs / "img" / f"performance-{name}.png").read_bytes().startswith(b"\x89PNG")


def test_the_page_shows_the_charts_committed_beside_it():
    report = json.loads(REPORT.read_text())
    page = PAGE.read_text()

    for name in CHARTS:
        linked = f"](img/performance-{name}.png)" in page
        assert linked is (name in charts_of(report))
        assert not linked or (DOCS / "img" / f"performance-{name}.png").is_file()


def _window(rate: int) -> dict[str, object]:
    roles = ("launcher", "daemon", "fork_server", "record_processors", "workers")
    return {
        "seconds": 20.0,
        "rides": 20 * rate,
        "processes": dict.fromkeys(roles, 1),
        "cpu_seconds": dict.fromkeys(roles, 0.5),
    }


def test_the_page_states_the_shards_per_core_formula_and_each_runs_cpu_by_process_and_charts(tmp_path: Path):
    report = json.loads(REPORT.read_text())
    for run in report["daemon"].values():
        phases = [{"rate": rate, "put_rate": rate, "drain_seconds": 1.0, "sustained": True} for rate in (100, 200)]
        run["pod_cpu"] = pod_cpu_summary(4, _window(0), {100: _window(100), 200: _window(200)}, phases)
        run["latency_percentiles_ms"] = {rate: list(range(101)) for rate in run["latency_ms"]}
    report["daemon"]["fork_server"]["write_limit"] = {
        "settings": {},
        "backlog": 24_000,
        "warmup_rides": 8_000,
        "batches": 16,
        "batch_records": 16_000,
        "mean_batch_records": 1_000.0,
        **write_limit_summary(4, _window(0), _window(800), put_ms_per_1000=15.0),
    }
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(report))

    page = write_performance_docs(source, tmp_path / "docs").read_text()

    assert "N = (1,000 - F) / (I / S + C x L / 1,000)" in page
    for mode in report["daemon"]:
        assert f"| {mode}: idle, 4 shards leased |" in page
        assert f"| {mode}: 200 rides/s |" in page
    assert "| the backlog, predictions discarded, ms of CPU per 1,000 rides above idle |" in page
    assert "| F: the pod's fixed cost (ms/s) |" in page
    for name in CHARTS:
        assert f"](img/performance-{name}.png)" in page
        assert (tmp_path / "docs" / "img" / f"performance-{name}.png").read_bytes().startswith(b"\x89PNG")


def test_rendering_again_from_the_committed_report_leaves_it_in_place(tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "performance.json").write_bytes(REPORT.read_bytes())

    write_performance_docs(docs / "performance.json", docs)

    assert (docs / "performance.json").read_bytes() == REPORT.read_bytes()
    assert (docs / "performance.md").read_text() == PAGE.read_text()


def test_a_quick_runs_report_is_refused(tmp_path: Path):
    report = json.loads(REPORT.read_text())
    report["machine"]["quick"] = True
    source = tmp_path / "bench-quick.json"
    source.write_text(json.dumps(report))

    with pytest.raises(ConsumerError, match="quick"):
        write_performance_docs(source, tmp_path / "docs")
    assert not (tmp_path / "docs").exists()
