"""The launcher's supervision of the daemon (consumer/runtime/launcher.py), with a fake daemon in place of java:
SIGTERM and SIGINT reach the daemon as SIGTERM, the daemon's end becomes the launcher's exit status, and nothing of
the daemon's process group outlives it. The real daemon is tested in tests/e2e and tests/faults."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.launcher import LauncherRun
from tests.support.probes import gone


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., LauncherRun]]:
    """``launch(**options)``: a launcher supervising a fake daemon (options: :class:`LauncherRun`'s); whatever is
    left running is killed at the end."""
    runs: list[LauncherRun] = []

    def start(**options: Any) -> LauncherRun:
        run = LauncherRun(tmp_path / f"run-{len(runs)}", **options)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda signum: signum.name)
def test_a_stop_signal_reaches_the_daemon_as_sigterm_and_its_clean_exit_makes_the_launcher_exit_0(launch, signum):
    run = launch()
    run.wait_until_supervising()

    run.send(signum)

    assert run.wait() == 0, run.log()
    assert run.events() == ["started", "SIGTERM"]
    assert '"event":"stop_requested"' in run.log()


def test_a_daemon_killed_by_the_forwarded_sigterm_still_counts_as_a_requested_stop(launch):
    run = launch(FAKE_DAEMON_ON_SIGTERM="die")
    run.wait_until_supervising()

    run.send(signal.SIGTERM)

    assert run.wait() == 0, run.log()
    assert run.events() == ["started", "SIGTERM"]


def test_only_the_first_stop_signal_is_forwarded_to_the_daemon(launch):
    run = launch(FAKE_DAEMON_ON_SIGTERM="ignore", grace_millis=200, kill_margin_seconds=1.0)
    run.wait_until_supervising()
    run.send(signal.SIGTERM)
    run.wait_for_event("SIGTERM")

    run.send(signal.SIGINT)
    run.send(signal.SIGTERM)

    assert run.wait() == 128 + signal.SIGKILL, run.log()  # killed after its grace, never told twice
    assert run.events() == ["started", "SIGTERM"]


def test_a_daemon_that_fails_after_a_requested_stop_passes_its_status_through(launch):
    run = launch(FAKE_DAEMON_ON_SIGTERM="exit:3")
    run.wait_until_supervising()

    run.send(signal.SIGTERM)

    assert run.wait() == 3, run.log()


@pytest.mark.parametrize(("status", "expected"), [(0, 1), (7, 7)])
def test_a_daemon_that_exits_unasked_fails_the_launcher(launch, status, expected):
    """The KCL exits 0 when it gives up initialising: an exit nobody asked for is a failure whatever its status."""
    run = launch(FAKE_DAEMON_RUN=f"exit:{status}")

    assert run.wait() == expected, run.log()
    assert run.events() == ["started"]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=lambda signum: signum.name)
def test_a_daemon_killed_by_a_signal_unasked_makes_the_launcher_exit_128_plus_the_signal(launch, signum):
    run = launch(FAKE_DAEMON_RUN=f"kill:{int(signum)}")

    assert run.wait() == 128 + signum, run.log()


def test_a_daemon_that_outlives_its_shutdown_grace_is_killed_with_its_process_group(launch):
    run = launch(FAKE_DAEMON_ON_SIGTERM="ignore", FAKE_DAEMON_CHILD="1", grace_millis=200, kill_margin_seconds=0.5)
    run.wait_until_supervising()
    daemon, record_processor = run.daemon_pid(), run.child_pid()

    run.send(signal.SIGTERM)

    assert run.wait() == 128 + signal.SIGKILL, run.log()
    assert run.events() == ["started", "SIGTERM"]
    assert '"daemon_kill"' in run.log()
    assert gone(daemon), "the daemon outlived the launcher"
    assert gone(record_processor), "a record processor of the daemon's process group outlived the launcher"


def test_a_record_processor_the_daemon_left_behind_is_killed_when_the_daemon_exits(launch):
    run = launch(FAKE_DAEMON_CHILD="1")
    run.wait_until_supervising()
    record_processor = run.child_pid()

    run.send(signal.SIGTERM)

    assert run.wait() == 0, run.log()
    assert gone(record_processor), "the record processor left behind outlived the launcher"


def test_the_daemons_own_lines_reach_the_launchers_output_as_json(launch):
    run = launch(FAKE_DAEMON_RUN="exit:0")

    assert run.wait() == 1, run.log()  # an exit nobody asked for
    assert '"event":"fake daemon: started"' in run.log()
