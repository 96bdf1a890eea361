"""The test tiers, and the one policy for what a machine lacks.

Every test belongs to the tier named by its folder (``tests/<tier>/...``) and carries that tier's marker
(:data:`TIERS`). Tiers are chosen with ``-m`` alone: ``make test`` runs ``-m "not faults and not container"``,
``make test-faults`` ``-m faults`` and ``make container-test`` ``-m container``.

A test that cannot run here for want of a component or a data file is skipped with the reason
(:mod:`tests.support.requirements`); under ``CI=true`` every skip is reported as a failure instead.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from tests.support.requirements import in_ci

#: Fixtures every tier can ask for: the emulators and streams; the TLC trips file.
pytest_plugins = ["tests.support.stack", "tests.support.models"]

TESTS = Path(__file__).resolve().parent

#: The tiers, cheapest first: each is a folder of tests/ and the marker of every test in it.
TIERS = {
    "unit": "functions and in-memory fakes; subprocesses only for the fake daemon and the fork server's edges",
    "static": "the Dockerfile, the Kubernetes and ECS manifests and the IAM policies, checked without running them",
    "integration": "the tools, the model store and the metrics against local services (emulators, moto, prometheus)",
    "protocol": "record_processor.py as a subprocess speaking MultiLang JSON lines, writing to the Kinesis emulator",
    "e2e": "the real KCL daemon (Java) started by `python -m consumer run` against the emulators",
    "faults": "kills, throttling, resharding... on the real daemon, judged by the record ledger; `make test-faults`",
    "container": "the image built from the Dockerfile with podman, run against the emulators; `make container-test`",
}


def pytest_configure(config: pytest.Config) -> None:
    for tier, description in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {description}")


def _tier(item: pytest.Item) -> str:
    relative = item.path.resolve().relative_to(TESTS)
    tier = relative.parts[0] if len(relative.parts) > 1 else ""
    if tier not in TIERS:
        raise pytest.UsageError(f"{item.nodeid}: a test lives in tests/<tier>/, <tier> one of {', '.join(TIERS)}")
    return tier


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(_tier(item))


def _ci_failure(report: pytest.CollectReport | pytest.TestReport) -> None:
    """Under CI=true, turn a skipped report into a failure that still gives the skip's reason."""
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = f"CI=true: a skip is a failure here (CI installs every component and data file). {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    _ci_failure(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, None, None]:
    outcome = yield
    _ci_failure(outcome.get_result())
