"""The **lambda_baseline** section: what the Lambda this service replaces did per record (base64 and JSON decode,
one MLflow pyfunc ``predict`` of one ride, one ``put_record`` to the emulator)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from consumer.tools.bench.config import BenchConfig
from consumer.tools.bench.model import BenchModel
from consumer.tools.bench.rides import Rides
from consumer.tools.bench.stats import summary

__all__ = ["lambda_section"]


def _lambda_once(model: Any, client: Any, stream: str, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The seed's handler, record by record: decode, predict one ride, put_record one prediction."""
    predict_seconds = put_seconds = 0.0
    started = time.perf_counter()
    for record in events:
        decoded = base64.b64decode(record["kinesis"]["data"]).decode("utf-8")
        ride_event = json.loads(decoded)
        ride, ride_id = ride_event["ride"], ride_event["ride_id"]
        features = {"PU_DO": f"{ride['PULocationID']}_{ride['DOLocationID']}", "trip_distance": ride["trip_distance"]}
        before = time.perf_counter()
        prediction = float(model.predict([features])[0])
        predict_seconds += time.perf_counter() - before
        event = {
            "model": "ride_duration_prediction_model",
            "version": "bench",
            "prediction": {"ride_duration": prediction, "ride_id": ride_id},
        }
        before = time.perf_counter()
        client.put_record(StreamName=stream, Data=json.dumps(event), PartitionKey=str(ride_id))
        put_seconds += time.perf_counter() - before
    seconds = time.perf_counter() - started
    return {
        "rides": len(events),
        "seconds": seconds,
        "rides_per_second": len(events) / seconds,
        "rides_per_second_without_put": len(events) / (seconds - put_seconds),
        "predict_ms_per_ride": 1000 * predict_seconds / len(events),
        "put_record_ms": 1000 * put_seconds / len(events),
    }


def lambda_section(config: BenchConfig, model: BenchModel, rides: Rides, stack: Any) -> dict[str, Any]:
    import mlflow
    import mlflow.pyfunc

    mlflow.set_tracking_uri(model.tracking_uri)
    mlflow.set_registry_uri(model.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(model.uri)
    stream = f"bench-lambda-{uuid.uuid4().hex[:6]}"
    stack.create_stream(stream, 1)
    client = stack.kinesis_client()
    events = [
        {"kinesis": {"data": base64.b64encode(data).decode("ascii"), "partitionKey": key}}
        for data, key in rides.cycle(config.lambda_rides)
    ]
    extra = ("rides_per_second_without_put", "predict_ms_per_ride", "put_record_ms")
    runs = [_lambda_once(pyfunc, client, stream, events) for _ in range(config.runs)]
    section = summary(runs, "rides_per_second", extra=extra)
    # The seed trained and logged its forest with n_jobs=-1, so each one-ride predict started a thread pool; ours
    # is logged with n_jobs=1 (above, the Lambda at its best). The seed's way, for reference:
    forest = pyfunc.get_raw_model().steps[-1][1]
    forest.set_params(n_jobs=-1)
    seed = [_lambda_once(pyfunc, client, stream, events) for _ in range(config.runs)]
    section["seed_n_jobs_all_cores"] = summary(seed, "rides_per_second", extra=extra)
    return section
