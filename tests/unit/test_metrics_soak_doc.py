"""docs/metrics-soak.md is rendered from docs/metrics-soak.json (``make soak-docs``): the soak's figures live in the
JSON only, and nobody edits them on the page by hand."""

from __future__ import annotations

import json
from pathlib import Path

from consumer.cli import main
from consumer.tools.bench.soak import SOAK_DOC, SOAK_REPORT, render_soak_doc
from consumer.tools.paths import REPO_ROOT

DOCS = REPO_ROOT / "docs"


def test_the_committed_page_is_what_the_committed_report_renders():
    report = json.loads((DOCS / SOAK_REPORT).read_text())

    assert (DOCS / SOAK_DOC).read_text() == render_soak_doc(report), (
        "run `make soak-docs SOAK_JSON=docs/metrics-soak.json`"
    )


def test_the_committed_report_has_both_modes_sampled_at_the_same_lifetimes_up_to_thousands():
    report = json.loads((DOCS / SOAK_REPORT).read_text())

    lifetimes = [sample["lifetimes"] for sample in report["compaction"]]
    assert lifetimes == [sample["lifetimes"] for sample in report["no_compaction"]]
    assert lifetimes[-1] == report["config"]["lifetimes"] >= 1000


def test_the_command_copies_the_report_and_renders_the_page(tmp_path: Path):
    source = tmp_path / "soak.json"
    source.write_bytes((DOCS / SOAK_REPORT).read_bytes())

    assert main(["bench", "--soak", "--docs-from", str(source), "--docs-dir", str(tmp_path / "docs")]) == 0

    assert (tmp_path / "docs" / SOAK_REPORT).read_bytes() == source.read_bytes()
    assert (tmp_path / "docs" / SOAK_DOC).read_text() == (DOCS / SOAK_DOC).read_text()
