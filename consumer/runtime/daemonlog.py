"""The daemon's stderr as the launcher reads it: relayed to the launcher's own, and watched for two things.

- **Initialisation**: the KCL scheduler logs :data:`INITIALIZED_MARKER` once its lease coordinator is up and its
  worker loop starts; readiness waits for it (consumer/runtime/health.py). It is the one signal that covers a pod
  holding no lease (more pods than shards): no processor ever starts there. The MultiLangDaemon offers no other
  (no health endpoint, no hook), so the line is pinned by a test on the real daemon
  (tests/e2e/test_daemon_lifecycle.py) that fails when a KCL upgrade changes it.
- **The cause of an exit**: the last warning and error lines of the daemon itself are kept, so that when it
  stops without being asked to, the launcher can say why in one line (:meth:`DaemonOutput.cause`).

The daemon's stderr carries its own lines (JSON, by properties/logback.xml: ``"component":"kcl"``) and every line
its record processors log (JSON, by structlog). A line that is not JSON (the JVM's own messages, a usage error) is
wrapped into one at level error, so the container's output is JSON lines throughout.
"""

from __future__ import annotations

import collections
import contextvars
import datetime
import re
import threading
from collections.abc import Callable
from typing import IO

import orjson

from consumer.runtime.logs import get_logger

__all__ = ["INITIALIZED_MARKER", "DaemonOutput", "DaemonProblem"]

#: What the KCL Scheduler logs once its lease coordinator is up and its worker loop starts.
INITIALIZED_MARKER = b"Initialization complete"
#: How many of the daemon's last warning and error lines are kept (the KCL tries to initialise 20 times).
_KEPT_PROBLEMS = 100
#: ``java.lang.RuntimeException: `` and the like, at the start of an exception's first line.
_EXCEPTION_PREFIX = re.compile(r"^(?:[a-z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error|Throwable): ")
#: An exception's class named in a message (``Got ResourceNotFoundException when fetching shard list``).
_NAMED_EXCEPTION = re.compile(r"\b[A-Z][A-Za-z]+Exception\b")


class DaemonProblem:
    """One warning or error line of the daemon: what it said and the exception it logged (a Java stack trace)."""

    def __init__(self, level: str, event: str, exception: str = "") -> None:
        self.level = level
        self.event = event
        self.exception = exception

    @property
    def exception_message(self) -> str:
        """The exception's first line without the class names that wrap it (``java.lang.RuntimeException:
        software...SdkClientException: Unable to execute HTTP request: ...`` -> ``Unable to execute HTTP
        request: ...``): Java wraps a cause with its whole message, so this is the innermost message, whole."""
        first = self.exception.split("\n", 1)[0].strip()
        while match := _EXCEPTION_PREFIX.match(first):
            first = first[match.end() :]
        return first

    @property
    def names_aws_error(self) -> bool:
        """Whether the line names an error of an AWS call (an SDK exception, a service's error): the daemon's
        failures to reach or use its stream and its lease table, which its other complaints follow from."""
        return (
            bool(_NAMED_EXCEPTION.search(self.event)) or "software.amazon.awssdk." in self.exception.split("\n", 1)[0]
        )

    def describe(self) -> str:
        message = self.exception_message
        return f"{self.event}: {message}" if message and message not in self.event else self.event


class DaemonOutput:
    """Relays the daemon's stderr to ``out`` line by line; calls ``on_initialized`` once, when the scheduler says
    it has initialised; keeps the daemon's last warning and error lines."""

    def __init__(self, stream: IO[bytes], out: IO[bytes], on_initialized: Callable[[], None]) -> None:
        self._stream = stream
        self._out = out
        self._on_initialized = on_initialized
        self._initialized = False
        self._problems: collections.deque[DaemonProblem] = collections.deque(maxlen=_KEPT_PROBLEMS)
        # The launcher's context (component, model version) on the relay's own lines: a thread starts without it.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._relay,), name="daemon-output", daemon=True)

    def start(self) -> DaemonOutput:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def problems(self) -> list[DaemonProblem]:
        return list(self._problems)

    def cause(self) -> tuple[str, int] | None:
        """The most specific reason the daemon gave, and how many times it gave it; None when it logged no
        warning or error.

        The daemon retries before it gives up, and each attempt logs its failure and then what failed because of
        it: the most repeated line that names an AWS error (connection refused by the lease table's endpoint, a
        stream that does not exist) is the cause; without one, the last error line, else the last warning."""
        problems = self.problems()
        named = collections.Counter(problem.describe() for problem in problems if problem.names_aws_error)
        if named:
            latest = {text: index for index, text in enumerate(p.describe() for p in problems)}
            text, count = max(named.items(), key=lambda item: (item[1], latest[item[0]]))
            return text, count
        for level in ("error", "warning"):
            for problem in reversed(problems):
                if problem.level == level:
                    return problem.describe(), 1
        return None

    def last_error(self) -> str | None:
        """What the daemon's last error line said (e.g. that it gives up initialising), None without one."""
        return next((problem.event for problem in reversed(self.problems()) if problem.level == "error"), None)

    def _relay(self) -> None:
        for line in self._stream:
            if not self._initialized and INITIALIZED_MARKER in line:
                self._initialized = True
                get_logger().info("daemon_initialized")
                self._on_initialized()
            structured = line.startswith(b"{")
            self._keep_if_problem(line, structured)
            self._out.write(line if structured else _as_json(line))
            self._out.flush()

    def _keep_if_problem(self, line: bytes, structured: bool) -> None:
        if not structured:
            if line.strip():
                self._problems.append(DaemonProblem("error", _text(line)))
            return
        if b'"component":"kcl"' not in line or not (b'"level":"error"' in line or b'"level":"warning"' in line):
            return  # a processor's line, or the daemon's at info: not the daemon's complaint
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if isinstance(event, dict):
            level, message = str(event.get("level", "")), str(event.get("event", ""))
            self._problems.append(DaemonProblem(level, message, str(event.get("exception") or "")))


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r\n")


def _as_json(line: bytes) -> bytes:
    return (
        orjson.dumps(
            {
                "timestamp": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
                "level": "error",
                "component": "kcl",
                "event": _text(line),
                "unstructured": True,
            }
        )
        + b"\n"
    )
