"""The web endpoint (``python -m consumer serve``): the course's request and response, bad bodies refused with
their reason and never a 5xx, health, metrics summed over the workers, a clean stop; and the same prediction, to
the bit, from the stream, the batch command and the endpoint.

Every test talks HTTP to the real server (gunicorn and its workers) on 127.0.0.1, which prepared the model of a
real MLflow store."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psutil
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.tools.multilang import MultiLangDriver, process_records_message
from consumer.tools.paths import REPO_ROOT
from consumer.tools.tail import read_all
from tests.integration.serving.conftest import ServedModel, WebServer, start_web_server

RIDE = {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}


def post(server: WebServer, body: bytes, path: str = "/predict") -> tuple[int, Any]:
    request = urllib.request.Request(f"{server.url}{path}", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def get(server: WebServer, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metric_samples(server: WebServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(server, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


# ------------------------------------------------------------------------------------------------ the contract


def test_one_ride_answers_the_courses_duration_and_model_version(web):
    status, answer = post(web, orjson.dumps(RIDE))

    assert status == 200
    assert set(answer) == {"duration", "model_version"}
    assert isinstance(answer["duration"], float) and 1 < answer["duration"] < 60
    assert answer["model_version"] == "1"


def test_a_list_of_rides_answers_a_list_in_order(web):
    rides = [RIDE, {**RIDE, "trip_distance": 12.5}, {"PULocationID": 1, "DOLocationID": 265, "trip_distance": 0}]

    status, answers = post(web, orjson.dumps(rides))

    assert status == 200
    assert [answer["model_version"] for answer in answers] == ["1", "1", "1"]
    singles = [post(web, orjson.dumps(ride))[1]["duration"] for ride in rides]
    assert [answer["duration"] for answer in answers] == singles
    assert post(web, b"[]") == (200, [])


def test_extra_fields_of_a_ride_are_ignored_as_the_stream_ignores_them(web):
    assert post(web, orjson.dumps({**RIDE, "ride_id": 156, "VendorID": 2})) == post(web, orjson.dumps(RIDE))


BAD_BODIES = {
    "not UTF-8": (b"\xff\xfe{}", 400, "not_utf8"),
    "not JSON": (b"{PULocationID: 130", 400, "not_json"),
    "empty": (b"", 400, "not_json"),
    "NaN is not JSON": (b'{"PULocationID": 130, "DOLocationID": 205, "trip_distance": NaN}', 400, "not_json"),
    "an infinite number": (b'{"PULocationID": 130, "DOLocationID": 205, "trip_distance": 1e999}', 400, "not_json"),
    "a string": (b'"130 to 205"', 400, "not_an_object"),
    "a number": (b"3.66", 400, "not_an_object"),
    "missing field": (b'{"PULocationID": 130, "trip_distance": 3.66}', 400, "missing_field"),
    "null field": (b'{"PULocationID": 130, "DOLocationID": null, "trip_distance": 3.66}', 400, "missing_field"),
    "zone as a string": (b'{"PULocationID": "130", "DOLocationID": 205, "trip_distance": 3.66}', 400, "wrong_type"),
    "zone as a float": (b'{"PULocationID": 130.0, "DOLocationID": 205, "trip_distance": 3.66}', 400, "wrong_type"),
    "zone as a boolean": (b'{"PULocationID": true, "DOLocationID": 205, "trip_distance": 3.66}', 400, "wrong_type"),
    "distance as a string": (b'{"PULocationID": 130, "DOLocationID": 205, "trip_distance": "3.66"}', 400, "wrong_type"),
    "too large": (orjson.dumps([RIDE] * 100), 413, "too_large"),
}


@pytest.mark.parametrize("body, status, reason", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_body_gets_a_4xx_with_its_reason(web, body, status, reason):
    answered, answer = post(web, body)

    assert (answered, answer["reason"]) == (status, reason)
    assert answer["detail"]


def test_a_list_with_one_bad_ride_is_refused_whole_naming_that_ride(web):
    rides = [RIDE, RIDE, {"PULocationID": 130, "DOLocationID": 205}, {**RIDE, "trip_distance": "far"}]

    status, answer = post(web, orjson.dumps(rides))

    assert (status, answer["reason"], answer["index"]) == (400, "missing_field", 2)
    assert post(web, orjson.dumps([RIDE, 7]))[1] == {
        "reason": "not_an_object",
        "detail": "item 1 is a JSON int, not a ride",
        "index": 1,
    }


def test_a_chunked_body_over_the_limit_gets_413_too(web):
    """No Content-Length to refuse up front: the server stops reading at the limit."""
    host, port = urllib.parse.urlsplit(web.url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    chunks = (orjson.dumps(RIDE) for _ in range(200))
    connection.request("POST", "/predict", body=chunks, encode_chunked=True)
    answer = connection.getresponse()

    assert answer.status == 413
    assert orjson.loads(answer.read())["reason"] == "too_large"


def test_a_broken_chunked_body_gets_a_4xx_not_a_5xx(web):
    host, port = urllib.parse.urlsplit(web.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b'POST /predict HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"PUL\r\nnot-a-size\r\n'
        )
        status_line = connection.recv(4096).split(b"\r\n", 1)[0]

    assert status_line.startswith(b"HTTP/1.1 4"), status_line


def test_other_methods_and_paths_get_a_json_4xx(web):
    status, body = get(web, "/predict")
    assert status == 405 and orjson.loads(body)["reason"] == "http"
    status, body = get(web, "/nothing-here")
    assert status == 404 and orjson.loads(body)["reason"] == "http"


# ------------------------------------------------------------------------------------------------ operations


def test_health_and_readiness_answer_with_the_model(web):
    assert get(web, "/healthz") == (200, b'{"status":"ok","checks":["the worker answers"]}')
    status, body = get(web, "/readyz")
    assert status == 200
    assert orjson.loads(body) == {"status": "ok", "checks": ["model version 1 loaded (onnx)"]}


def test_metrics_count_every_request_of_every_worker_and_refusals_by_reason(web):
    answered = ("ride_consumer_web_requests_total", (("path", "/predict"), ("status", "200")))
    refused = ("ride_consumer_web_rejected_total", (("reason", "wrong_type"),))
    latency = ("ride_consumer_web_request_duration_seconds_count", (("path", "/predict"),))
    before = metric_samples(web)

    for _ in range(40):  # a new connection each: both workers answer some
        post(web, orjson.dumps(RIDE))
    for _ in range(3):
        post(web, b'{"PULocationID": "1", "DOLocationID": 2, "trip_distance": 1}')
    after = metric_samples(web)

    assert after[answered] - before.get(answered, 0) == 40
    assert after[refused] - before[refused] == 3
    assert after[latency] - before[latency] == 43
    assert (
        after[("ride_consumer_web_predictions_total", ())] - before[("ride_consumer_web_predictions_total", ())] == 40
    )
    model = next(key for key in after if key[0] == "ride_consumer_web_model_info")
    assert dict(model[1])["version"] == "1" and dict(model[1])["model_path"] == "onnx"
    assert ("ride_consumer_web_rejected_total", (("reason", "too_large"),)) in after  # every reason from the start


def test_the_server_processes_hold_neither_mlflow_nor_scikit_learn(web):
    """The fast path's promise: onnxruntime and numpy only. Compiled extensions of pandas (which MLflow imports)
    and scikit-learn would be mapped into the processes that imported them."""
    master = psutil.Process(web.process.pid)
    processes = [master, *master.children()]
    assert len(processes) == 3  # the master and two workers
    for process in processes:
        mapped = {region.path for region in process.memory_maps()}
        assert not [path for path in mapped if "/sklearn/" in path or "/pandas/" in path], process.cmdline()
        assert any("onnxruntime" in path for path in mapped)


def test_sigterm_stops_the_server_and_its_workers_with_status_0(served_model, tmp_path):
    server = start_web_server(served_model, tmp_path, SERVE_WORKERS="2")
    workers = psutil.Process(server.process.pid).children()

    assert server.stop() == 0
    assert not [worker for worker in workers if worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE]
    assert b"SIGABRT" not in server.log.read_bytes()


# ------------------------------------------------------------------------------------------------ three ways, one model


def stream_predictions(local_stack, served_model: ServedModel, payloads: list[bytes]) -> dict[int, float]:
    """The stream's own shard process (record_processor.py through the MultiLang protocol) on the same prepared
    model, writing prediction events to kinesis-local: ride id -> ride_duration."""
    import uuid

    names = {
        "INPUT_STREAM_NAME": f"rides-{uuid.uuid4().hex[:8]}",
        "PREDICTIONS_STREAM_NAME": f"predictions-{uuid.uuid4().hex[:8]}",
        "DEAD_LETTER_STREAM_NAME": f"dead-letters-{uuid.uuid4().hex[:8]}",
    }
    local_stack.create_stream(names["PREDICTIONS_STREAM_NAME"], 1)
    local_stack.create_stream(names["DEAD_LETTER_STREAM_NAME"], 1)
    env = {key: value for key, value in served_model.env.items() if not key.startswith("MLFLOW_")}
    env.update(local_stack.env(), **names, KCL_APPLICATION_NAME="serving-test")
    env["PREPARED_MODEL_DIR"] = str(served_model.prepared)
    driver = MultiLangDriver(env)
    try:
        driver.initialize()
        driver.process_records(process_records_message([(data, str(key)) for key, data in enumerate(payloads)], 1000))
        assert driver.close() == 0
    finally:
        driver.kill()
    scored = read_all(local_stack.kinesis_client(), names["PREDICTIONS_STREAM_NAME"], expect=len(payloads), timeout=30)
    return {item.event["prediction"]["ride_id"]: item.event["prediction"]["ride_duration"] for item in scored}


def test_the_stream_the_batch_command_and_the_endpoint_give_bit_identical_predictions(
    web, served_model, month_file, local_stack, tmp_path
):
    output = tmp_path / "predictions.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "score", "--input", str(month_file), "--output", str(output)],
        cwd=REPO_ROOT,
        env=served_model.env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    batch = pq.read_table(output).to_pylist()
    rides = [{name: row[name] for name in ("PULocationID", "DOLocationID", "trip_distance")} for row in batch]
    scored = [index for index, row in enumerate(batch) if row["reason"] is None]
    assert len(scored) > 300

    web_durations = []
    for start in range(0, len(scored), 40):  # lists of 40 rides: within the test server's 4 KiB bodies
        status, answers = post(web, orjson.dumps([rides[index] for index in scored[start : start + 40]]))
        assert status == 200, answers
        web_durations += [answer["duration"] for answer in answers]
    one_by_one = [post(web, orjson.dumps(rides[index]))[1]["duration"] for index in scored[:25]]
    stream = stream_predictions(
        local_stack, served_model, [orjson.dumps({"ride": ride, "ride_id": index}) for index, ride in enumerate(rides)]
    )

    batch_durations = [batch[index]["predicted_duration"] for index in scored]
    assert [stream[index] for index in scored] == batch_durations  # floats compared exactly: bit for bit
    assert web_durations == batch_durations
    assert one_by_one == batch_durations[:25]
    assert sorted(stream) == scored  # the stream scores exactly the rides the batch command scores


def test_served_model_is_the_one_prepared_for_all_three(served_model, web):
    """Every command prepared MODEL_URI into the same cache and found the directory already there."""
    log = Path(web.log).read_text()
    assert "model_prepared_reused" in log and str(served_model.prepared) in log
