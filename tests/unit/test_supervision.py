"""The launcher's supervision without a daemon: what a stop signal does at each moment, which exit status a
daemon's end gives, and which cause the launcher names from the daemon's log lines (the formats are the KCL's own,
as properties/logback.xml writes them; tests/e2e/test_daemon_lifecycle.py has the real daemon say them)."""

from __future__ import annotations

import io
import os
import signal
from typing import Any

import orjson
import pytest

from consumer.runtime.daemonlog import DaemonOutput
from consumer.runtime.logs import configure_logging
from consumer.runtime.supervision import StopRequested, StopSignals, exit_status


def kcl(level: str, event: str, exception: str = "") -> bytes:
    return (
        orjson.dumps(
            {
                "timestamp": "2026-01-01T00:00:00.000Z",
                "level": level,
                "component": "kcl",
                "logger": "software.amazon.kinesis.coordinator.Scheduler",
                "thread": "multi-lang-daemon-0000",
                "event": event,
                "exception": exception,
            }
        )
        + b"\n"
    )


def stack(*messages: str) -> str:
    """A Java stack trace: the first message, then each cause."""
    lines = [messages[0], "\tat software.amazon.kinesis.coordinator.Scheduler.initialize(Scheduler.java:342)"]
    lines += [f"Caused by: {message}\n\t... 9 more" for message in messages[1:]]
    return "\n".join(lines)


REFUSED = stack(
    "java.lang.RuntimeException: software.amazon.awssdk.core.exception.SdkClientException: Unable to execute HTTP "
    "request: Connection refused: /127.0.0.1:9",
    "software.amazon.awssdk.core.exception.SdkClientException: Unable to execute HTTP request: Connection refused: "
    "/127.0.0.1:9",
    "java.net.ConnectException: Connection refused",
)
POOL_TIMEOUT = stack(
    "java.lang.RuntimeException: java.lang.RuntimeException: software.amazon.awssdk.core.exception."
    "SdkClientException: Unable to execute HTTP request: Acquire operation took longer than the configured maximum "
    "time.",
    "java.util.concurrent.TimeoutException: Acquire operation took longer than 10000 milliseconds.",
)
GIVE_UP = "Unable to initialize after 20 attempts. Shutting down."


def relayed(*lines: bytes) -> DaemonOutput:
    output = DaemonOutput(io.BytesIO(b"".join(lines)), io.BytesIO(), lambda: None).start()
    output.join(timeout=10)
    return output


def test_an_unreachable_lease_table_is_named_by_the_error_the_daemon_repeated_not_by_its_last():
    attempt = kcl("error", "Caught exception when initializing LeaseCoordinator", REFUSED)
    later = kcl("error", "Caught exception when initializing LeaseCoordinator", POOL_TIMEOUT)

    output = relayed(attempt * 18, later * 2, kcl("error", GIVE_UP, POOL_TIMEOUT))

    assert output.cause() == (
        "Caught exception when initializing LeaseCoordinator: Unable to execute HTTP request: Connection refused: "
        "/127.0.0.1:9",
        18,
    )
    assert output.last_error() == GIVE_UP


def test_a_missing_stream_is_named_by_the_warning_that_names_the_aws_error_before_its_consequences():
    missing = kcl(
        "warning", "Got ResourceNotFoundException when fetching shard list for rides. Stream no longer exists."
    )
    consequence = stack(
        "java.lang.IllegalStateException: No shards found when attempting to validate complete hash range."
    )
    attempt = (
        missing
        + kcl("error", "Caught exception while sync'ing Kinesis shards and leases", consequence)
        + kcl("error", "Caught exception when initializing LeaseCoordinator", consequence)
    )

    output = relayed(attempt * 3, kcl("error", GIVE_UP, consequence))

    assert output.cause() == (
        "Got ResourceNotFoundException when fetching shard list for rides. Stream no longer exists.",
        3,
    )


def test_without_an_aws_error_the_cause_is_the_last_error_and_processor_lines_are_not_the_daemons():
    processor = b'{"event":"batch_failed","level":"error","component":"record_processor"}\n'
    jvm = b"Error: Could not find or load main class software.amazon.kinesis.multilang.MultiLangDaemon\n"

    output = relayed(kcl("warning", "Lease table is empty"), jvm, processor)

    assert output.cause() == (jvm.decode().strip(), 1)
    assert relayed(processor, kcl("info", "Initialization complete. Starting worker loop.")).cause() is None
    assert relayed(kcl("warning", "Lease table is empty"), processor).cause() == ("Lease table is empty", 1)


class Daemon:
    """What StopSignals forwards a stop to."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)


def test_a_stop_before_the_daemon_starts_ends_start_up_where_it_is():
    with StopSignals() as stop, pytest.raises(StopRequested):
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("start-up went on after the stop")  # pragma: no cover
    assert stop.signal_name == "SIGTERM"


def test_a_stop_while_the_daemon_is_being_started_goes_to_it_once_it_has_started():
    daemon = Daemon()
    with StopSignals() as stop:
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            stop.daemon_started(daemon)  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)  # a second stop changes nothing

    assert daemon.signals == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handlers are back


def test_a_stop_while_the_daemon_runs_is_forwarded_to_it():
    daemon = Daemon()
    with StopSignals() as stop:
        stop.daemon_started(daemon)  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)

    assert daemon.signals == [signal.SIGTERM]
    assert stop.requested


@pytest.fixture
def log_lines() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, component="launcher")
    return stream


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(("status", "expected"), [(0, 1), (3, 3), (-signal.SIGKILL, 128 + signal.SIGKILL)])
def test_a_daemon_that_ends_unasked_is_a_failure_named_in_one_line(log_lines, status, expected):
    output = relayed(
        kcl("error", "Caught exception when initializing LeaseCoordinator", REFUSED), kcl("error", GIVE_UP)
    )
    with StopSignals() as stop:
        code = exit_status(status, stop, output)

    assert code == expected
    [line] = events(log_lines)
    assert line["event"] == "daemon_exited" and line["level"] == "error"
    assert (line["status"], line["exit_status"], line["requested"]) == (status, expected, False)
    assert line["cause"].endswith("Connection refused: /127.0.0.1:9")
    assert line["last_error"] == GIVE_UP


def test_a_daemon_that_stops_when_asked_is_a_success(log_lines):
    with StopSignals() as stop:
        stop.daemon_started(Daemon())  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)
        assert exit_status(0, stop, relayed()) == 0
        assert exit_status(-signal.SIGTERM, stop, relayed()) == 0
        assert exit_status(-signal.SIGKILL, stop, relayed()) == 128 + signal.SIGKILL  # killed after its grace

    assert [line["event"] for line in events(log_lines)] == [
        "stop_requested",
        "daemon_stopped",
        "daemon_stopped",
        "daemon_exited",
    ]


def test_the_relays_own_line_carries_the_launchers_context(log_lines):
    relayed(kcl("info", "Initialization complete. Starting worker loop."))

    [line] = events(log_lines)
    assert (line["event"], line["component"]) == ("daemon_initialized", "launcher")
