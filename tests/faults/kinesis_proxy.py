"""The fault-injection point: a small HTTP/1.1 reverse proxy on loopback in front of kinesis-local, for the
record processors' boto3 traffic.

The processors reach Kinesis through ``AWS_ENDPOINT_URL_KINESIS``; pointing that variable at the proxy sends each
of their PutRecords calls through it. The daemon keeps talking to kinesis-local directly: its ``kinesisEndpoint``
comes from ``KCL_EXTRA_PROPERTIES`` (which wins over the endpoint taken from the settings), because the KCL speaks
HTTP/2 (h2c) and this proxy carries HTTP/1.1 only.

Rules, applied to PutRecords calls for one stream (everything else passes through unchanged):

- :class:`ThrottleEntries`: a fraction of the entries is not forwarded and is answered as failed with
  ``ProvisionedThroughputExceededException`` (a partial failure; the other entries are really written);
- :class:`FailCalls`: the whole call is answered with an error (``InternalFailure`` 500 or
  ``ProvisionedThroughputExceededException`` 400), either without forwarding it or, with ``after_write``, after
  kinesis-local wrote it (a lost response: written, yet the caller is told it failed);
- :class:`HoldCalls`: the call is forwarded (written) and its response held until released (a hung call).

Each rule works on at most ``calls`` calls (``None``: until removed). Use it as a context manager::

    with KinesisProxy(stack.kinesis_endpoint) as proxy:
        proxy.add(ThrottleEntries("predictions-1", fraction=0.3))
"""

from __future__ import annotations

import http.client
import random
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, TypeVar

import orjson

PUT_RECORDS = "Kinesis_20131202.PutRecords"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"})
ERROR_STATUS = {"InternalFailure": 500, "ServiceUnavailable": 503}


@dataclass
class _Rule:
    stream: str
    calls: int | None = None
    applied: int = field(default=0, init=False)

    def takes(self, stream: str) -> bool:
        return stream == self.stream and (self.calls is None or self.applied < self.calls)


@dataclass
class ThrottleEntries(_Rule):
    """Fail ``fraction`` of each call's entries (chosen at random) with ``error_code``; forward the rest."""

    fraction: float = 0.3
    error_code: str = "ProvisionedThroughputExceededException"
    seed: int | None = None
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


@dataclass
class FailCalls(_Rule):
    """Answer whole calls with ``error_code``; with ``after_write`` only after forwarding them."""

    error_code: str = "InternalFailure"
    after_write: bool = False


@dataclass
class HoldCalls(_Rule):
    """Forward the call, then hold its response until :meth:`release` (or ``max_seconds``)."""

    max_seconds: float = 300.0
    holding: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


RuleT = TypeVar("RuleT", bound=_Rule)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a killed consumer) is part of the tests, not an error worth a traceback."""


class KinesisProxy:
    """The proxy: :meth:`start` / :meth:`stop` (or ``with``), :attr:`endpoint`, :meth:`add` / :meth:`remove`.

    :attr:`stats` counts, per ``(stream, what)``: ``calls``, ``entries_written``, ``entries_failed``,
    ``calls_failed``, ``calls_held``.
    """

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlparse(upstream)
        if parsed.scheme != "http" or parsed.hostname is None or parsed.port is None:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (parsed.hostname, parsed.port)
        self.stats: Counter[tuple[str, str]] = Counter()
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> Self:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="kinesis-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for rule in self._rules:
                if isinstance(rule, HoldCalls):
                    rule.release()
            self._rules.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- rules -----------------------------------------------------------------------------------------------
    def add(self, rule: RuleT) -> RuleT:
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: _Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)
        if isinstance(rule, HoldCalls):
            rule.release()

    def _rule_for(self, stream: str) -> _Rule | None:
        with self._lock:
            self.stats[(stream, "calls")] += 1
            for rule in self._rules:
                if rule.takes(stream):
                    rule.applied += 1
                    return rule
        return None

    def count(self, stream: str, what: str, n: int = 1) -> None:
        with self._lock:
            self.stats[(stream, what)] += n


def _error(code: str, message: str) -> tuple[int, bytes]:
    return ERROR_STATUS.get(code, 400), orjson.dumps({"__type": code, "message": message})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like boto3's pool expects
    owner: KinesisProxy
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's output is no place for an access log."""

    # --- plumbing ----------------------------------------------------------------------------------------------
    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed meanwhile
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                response = self._upstream.getresponse()
                return response.status, response.getheaders(), response.read()
            except (ConnectionError, http.client.HTTPException):
                self._upstream.close()
                self._upstream = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        sent_type = False
        for name, value in headers or []:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
                sent_type = sent_type or name.lower() == "content-type"
        if not sent_type:
            self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # --- requests ----------------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("X-Amz-Target") != PUT_RECORDS:
            self._reply(*self._passed(body))
            return
        request = orjson.loads(body)
        stream = request.get("StreamName") or str(request.get("StreamARN", "")).rsplit("/", 1)[-1]
        rule = self.owner._rule_for(stream)
        if isinstance(rule, ThrottleEntries):
            self._throttle(stream, request, rule)
        elif isinstance(rule, FailCalls):
            self._fail(stream, body, request, rule)
        elif isinstance(rule, HoldCalls):
            status, headers, answer = self._forward(body)
            self._count_written(stream, status, answer)
            self.owner.count(stream, "calls_held")
            rule.holding.set()
            rule.released.wait(rule.max_seconds)
            self._reply(status, answer, headers)
        else:
            status, headers, answer = self._forward(body)
            self._count_written(stream, status, answer)
            self._reply(status, answer, headers)

    def _passed(self, body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
        status, headers, answer = self._forward(body)
        return status, answer, headers

    def _count_written(self, stream: str, status: int, answer: bytes) -> None:
        if status == 200:
            response = orjson.loads(answer)
            self.owner.count(stream, "entries_written", len(response["Records"]) - response["FailedRecordCount"])

    def _fail(self, stream: str, body: bytes, request: dict[str, Any], rule: FailCalls) -> None:
        if rule.after_write:
            status, _, answer = self._forward(body)
            self._count_written(stream, status, answer)
        self.owner.count(stream, "calls_failed")
        status, answer = _error(rule.error_code, f"injected {rule.error_code} for stream {stream}")
        self._reply(status, answer)

    def _throttle(self, stream: str, request: dict[str, Any], rule: ThrottleEntries) -> None:
        entries = request["Records"]
        failing = {index for index in range(len(entries)) if rule.rng.random() < rule.fraction}
        kept = [entry for index, entry in enumerate(entries) if index not in failing]
        written: list[dict[str, Any]] = []
        upstream_failed = 0
        headers: list[tuple[str, str]] = []
        if kept:
            status, headers, answer = self._forward(orjson.dumps({**request, "Records": kept}))
            if status != 200:
                self._reply(status, answer, headers)
                return
            response = orjson.loads(answer)
            written, upstream_failed = response["Records"], response["FailedRecordCount"]
        results = iter(written)
        merged = [
            {"ErrorCode": rule.error_code, "ErrorMessage": f"Rate exceeded for shard in stream {stream} (injected)"}
            if index in failing
            else next(results)
            for index in range(len(entries))
        ]
        self.owner.count(stream, "entries_written", len(kept) - upstream_failed)
        self.owner.count(stream, "entries_failed", len(failing))
        answer = orjson.dumps({"FailedRecordCount": len(failing) + upstream_failed, "Records": merged})
        self._reply(200, answer, [(name, value) for name, value in headers if name.lower() == "x-amzn-requestid"])
