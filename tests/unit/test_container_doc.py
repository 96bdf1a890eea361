"""docs/container.md is rendered from docs/container.json (``make container-docs``, from what ``make
container-test`` measured): the image's and the pod's figures live in the JSON only, each goal beside its figure."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from consumer.tools.containerdocs import DOC_NAME, REPORT_NAME, goals, main, render_container_doc
from consumer.tools.paths import REPO_ROOT

DOCS = REPO_ROOT / "docs"


def committed() -> dict:
    return json.loads((DOCS / REPORT_NAME).read_text())


def test_the_committed_page_is_what_the_committed_report_renders():
    assert (DOCS / DOC_NAME).read_text() == render_container_doc(committed()), (
        "run `make container-docs CONTAINER_JSON=docs/container.json`"
    )


def test_the_committed_report_was_measured_at_three_leased_shards():
    pod = committed()["pod"]
    assert pod["shards"] == 3
    assert len(pod["memory_mib"]["record_processor"]) == 3


@pytest.mark.parametrize(
    ("path", "value", "met"),
    [
        (("image", "size_mb"), 700, True),
        (("image", "size_mb"), 701, False),
        (("pod", "pss_sum_mib"), 450.0, True),
        (("pod", "pss_sum_mib"), 450.5, False),
        (("pod", "launcher_rss_mib"), 57.2, True),  # 60 MB = 57.2 MiB
        (("pod", "launcher_rss_mib"), 57.3, False),
    ],
)
def test_each_goal_is_met_up_to_its_limit_and_not_beyond(path, value, met):
    report = copy.deepcopy(committed())
    report[path[0]][path[1]] = value
    rows = {row["goal"]: row for row in goals(report)}
    (row,) = [row for row in rows.values() if row["value"] == value]
    assert row["met"] is met


def test_a_goal_whose_figure_is_missing_is_shown_as_not_measured():
    report = copy.deepcopy(committed())
    del report["pod"]["launcher_rss_mib"]
    assert [row["met"] for row in goals(report)].count(None) == 1
    assert "| Launcher RSS once ready | not measured |" in render_container_doc(report)


def test_the_command_copies_the_report_and_renders_the_page(tmp_path: Path):
    source = tmp_path / "figures.json"
    source.write_bytes((DOCS / REPORT_NAME).read_bytes())
    (tmp_path / "docs").mkdir()

    assert main([str(source), "--docs-dir", str(tmp_path / "docs")]) == 0

    assert (tmp_path / "docs" / REPORT_NAME).read_bytes() == source.read_bytes()
    assert (tmp_path / "docs" / DOC_NAME).read_text() == (DOCS / DOC_NAME).read_text()
