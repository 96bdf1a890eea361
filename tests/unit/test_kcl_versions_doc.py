"""docs/kcl-versions.md is rendered from docs/kcl-versions.json (``make kcl-compare-docs``): the comparison's figures
live in the JSON only, and the page says which version ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.errors import ConsumerError
from consumer.runtime.jars import read_lock
from consumer.tools.kclcompare import VARIANTS, render_versions_doc, write_versions_docs
from consumer.tools.kclcompare.decision import SHIPPED
from consumer.tools.paths import REPO_ROOT

DOCS = REPO_ROOT / "docs"
REPORT = DOCS / "kcl-versions.json"
PAGE = DOCS / "kcl-versions.md"


def test_the_committed_page_is_what_the_committed_report_renders():
    report = json.loads(REPORT.read_text())

    assert PAGE.read_text() == render_versions_doc(report), "run `make kcl-compare-docs KCL_COMPARE_JSON=...`"


def test_the_committed_report_compares_every_variant_on_every_phase():
    report = json.loads(REPORT.read_text())

    assert list(report["variants"]) == list(VARIANTS)
    phases = {"cold_start", "steady", "join", "sigterm", "sigkill_worker", "sigkill_leader"}
    for variant in report["variants"].values():
        assert set(variant["phases"]) == phases
    assert report["variants"]["kcl3"]["phases"]["sigkill_leader"]["victim_was_leader"] is True


def test_the_report_is_of_the_shipped_jars():
    shipped = json.loads(REPORT.read_text())["variants"][SHIPPED]
    lock = read_lock()

    assert (shipped["kcl"], shipped["amazon_kclpy"], shipped["jars"]) == (
        lock.kcl_version,
        lock.kclpy_version,
        len(lock.pins),
    )


def test_the_command_copies_the_report_and_renders_the_page(tmp_path: Path):
    source = tmp_path / "kcl-compare.json"
    source.write_bytes(REPORT.read_bytes())
    docs = tmp_path / "docs"

    assert main(["kcl-compare", "--docs-from", str(source), "--docs-dir", str(docs)]) == 0

    assert (docs / "kcl-versions.json").read_bytes() == REPORT.read_bytes()
    assert (docs / "kcl-versions.md").read_text() == PAGE.read_text()


def test_a_report_without_both_kcl_lines_is_refused(tmp_path: Path):
    report = json.loads(REPORT.read_text())
    del report["variants"]["kcl2"]
    source = tmp_path / "kcl3-only.json"
    source.write_text(json.dumps(report))

    with pytest.raises(ConsumerError, match="kcl2"):
        write_versions_docs(source, tmp_path / "docs")
    assert not (tmp_path / "docs" / "kcl-versions.md").exists()
