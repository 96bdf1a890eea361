"""The web endpoint's application (Flask, as the course's web service): the course's contract on the stream's
model, validation and fast path.

- ``POST /predict`` with one ride, ``{"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}``, answers
  ``{"duration": <minutes>, "model_version": "<version>"}``; a JSON list of rides answers a list, in order.
  A body that is not a ride (or a list of rides) gets 400 with ``{"reason", "detail"}`` (and ``index``, the
  ride's place in a list), with the stream's dead-letter reasons; a body over ``SERVE_MAX_BODY_BYTES`` gets 413
  (``too_large``), one that cannot be read 400 (``unreadable``); a ride the model fails on gets 422
  (``model_error``). Nothing a client sends gets a 5xx.
  A list is answered whole or refused whole.
- ``GET /healthz`` (the worker answers) and ``GET /readyz`` (it has the model: workers start with it loaded), JSON
  as the stream's launcher answers them.
- ``GET /metrics``: every worker's metrics (prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``)
  and the model being served.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from werkzeug.exceptions import HTTPException

from consumer.model.scorer import AnyScorer
from consumer.pipeline.events import Reason
from consumer.runtime.health import Check
from consumer.runtime.logs import get_logger
from consumer.runtime.metrics import scrape_registry
from consumer.runtime.metricsfolder import MetricsFolder
from consumer.serving.scoring import Rejection, score_rows

__all__ = ["PREFIX", "REASONS", "WebMetrics", "create_app", "parse_rides", "read_body"]

PREFIX = "ride_consumer_web"
#: The reasons of a body over SERVE_MAX_BODY_BYTES and of one that cannot be read (a broken chunked encoding, a
#: client gone mid-body); the others are the stream's (consumer.pipeline.events.Reason).
TOO_LARGE = "too_large"
UNREADABLE = "unreadable"
REASONS = (
    Reason.NOT_UTF8,
    Reason.NOT_JSON,
    Reason.NOT_AN_OBJECT,
    Reason.MISSING_FIELD,
    Reason.WRONG_TYPE,
    Reason.NOT_FINITE,
    Reason.MODEL_ERROR,
    TOO_LARGE,
    UNREADABLE,
)
#: The paths the metrics label by name; any other is "other" (labels stay bounded).
PATHS = ("/predict", "/healthz", "/readyz", "/metrics")
#: One request, from Flask's dispatch to its response: a few rides take well under a millisecond on the fast path.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class WebMetrics:
    """What the workers record; in multiprocess mode every worker writes its own files, served by any worker."""

    requests: Counter
    latency: Histogram
    rejected: Counter
    predictions: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WebMetrics:
        metrics = cls(
            requests=Counter(
                f"{PREFIX}_requests",
                "HTTP requests answered, by path and status code.",
                ["path", "status"],
                registry=registry,
            ),
            latency=Histogram(
                f"{PREFIX}_request_duration_seconds",
                "Time to answer one request, by path.",
                ["path"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            rejected=Counter(
                f"{PREFIX}_rejected",
                "Requests to /predict refused, by reason (the stream's dead-letter reasons, and too_large).",
                ["reason"],
                registry=registry,
            ),
            predictions=Counter(f"{PREFIX}_predictions", "Rides scored.", registry=registry),
        )
        for reason in REASONS:  # every series exists at 0 from the start: rate() and alerts see the first one
            metrics.rejected.labels(reason)
        return metrics


class ModelCollector(Collector):
    """The model being served (value 1), read at each scrape."""

    def __init__(self, model: AnyScorer) -> None:
        self._model = model

    def collect(self) -> Iterator[Metric]:
        info = self._model.info
        family = GaugeMetricFamily(
            f"{PREFIX}_model_info",
            "The model the endpoint serves (value 1): registered name, version (as in the answers), MODEL_URI and "
            "model_path (onnx: the compiled fast path; sklearn: the pipeline).",
            labels=["name", "version", "uri", "model_path"],
        )
        family.add_metric([info.name or "", info.version, info.uri, self._model.path], 1)
        yield family


class BadRequest(Exception):
    """A body /predict refuses: the reason (a metric label), a sentence, and the ride's index in a list."""

    def __init__(self, reason: str, detail: str, index: int | None = None, status: int = 400) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.index, self.status = reason, detail, index, status

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": self.reason, "detail": self.detail}
        if self.index is not None:
            body["index"] = self.index
        return body


def parse_rides(body: bytes) -> tuple[list[Mapping[str, Any]], bool]:
    """The rides of a /predict body and whether it was a list; raise :class:`BadRequest` when it is not a JSON
    object or a list of them. Fields are checked later, by the stream's validation."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(Reason.NOT_UTF8, f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        parsed = orjson.loads(body)  # refuses NaN and Infinity, which are not JSON
    except orjson.JSONDecodeError as exc:
        raise BadRequest(Reason.NOT_JSON, f"body is not JSON ({exc.msg})") from None
    if isinstance(parsed, dict):
        return [parsed], False
    if not isinstance(parsed, list):
        raise BadRequest(Reason.NOT_AN_OBJECT, f"body is a JSON {type(parsed).__name__}, not a ride or a list of rides")
    for index, item in enumerate(parsed):
        if not isinstance(item, dict):
            raise BadRequest(Reason.NOT_AN_OBJECT, f"item {index} is a JSON {type(item).__name__}, not a ride", index)
    return parsed, True


def read_body(max_bytes: int) -> bytes:
    """The request's body; :class:`BadRequest` (413) when it is over ``max_bytes``, announced (Content-Length) or
    not (chunked: reading stops just past the limit)."""
    too_large = BadRequest(TOO_LARGE, f"body is larger than {max_bytes} bytes", status=413)
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = request.stream.read(min(64 * 1024, max_bytes + 1 - size))
        except Exception as exc:  # noqa: BLE001 - the server's parser and werkzeug raise their own types
            raise BadRequest(UNREADABLE, f"the body cannot be read: {type(exc).__name__}: {exc}"[:300]) from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise too_large


def _predict(model: AnyScorer, rides: Sequence[Mapping[str, Any]], is_list: bool) -> list[float]:
    durations: list[float] = []
    for index, outcome in enumerate(score_rows(model, rides, list(range(len(rides))))):
        if isinstance(outcome, Rejection):
            status = 422 if outcome.reason == Reason.MODEL_ERROR else 400
            raise BadRequest(outcome.reason, outcome.detail, index if is_list else None, status)
        durations.append(outcome)
    return durations


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def create_app(model: AnyScorer, metrics: WebMetrics, *, metrics_folder: MetricsFolder, max_body_bytes: int) -> Flask:
    """The application: every route above, scoring with ``model``, recording into ``metrics``; /metrics reads the
    workers' files in ``metrics_folder``."""
    app = Flask(__name__)
    version = model.info.version
    model_collector = ModelCollector(model)

    def refuse(error: BadRequest) -> Response:
        metrics.rejected.labels(error.reason).inc()
        response = _json(error.body(), error.status)
        if error.status == 413:  # the rest of the body is unread: a new connection is cheaper than draining it
            response.headers["Connection"] = "close"
        return response

    @app.before_request
    def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        path = request.path if request.path in PATHS else "other"
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.post("/predict")
    def predict() -> Response:
        try:
            rides, is_list = parse_rides(read_body(max_body_bytes))
            durations = _predict(model, rides, is_list)
        except BadRequest as error:
            return refuse(error)
        metrics.predictions.inc(len(durations))
        answers = [{"duration": duration, "model_version": version} for duration in durations]
        return _json(answers if is_list else answers[0])

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(Check(True, ["the worker answers"]).body(), mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        check = Check(True, [f"model version {version} loaded ({model.path})"])
        return Response(check.body(), mimetype="application/json")

    @app.get("/metrics")
    def prometheus() -> Response:
        registry = scrape_registry(metrics_folder)
        registry.register(model_collector)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(registry), content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return _json({"reason": "http", "detail": f"{error.code} {error.name}: {error.description}"}, error.code or 400)

    @app.errorhandler(Exception)
    def failed(error: Exception) -> Response:  # a bug: logged with its traceback, answered in JSON
        get_logger().error(
            "request_failed", path=request.path, error=f"{type(error).__name__}: {error}", exc_info=error
        )
        return _json({"reason": "internal", "detail": "the server failed to answer; see its log"}, 500)

    return app
