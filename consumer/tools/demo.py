"""``python -m consumer demo`` (``make demo``): the whole path on this machine, once, and what came out.

kinesis-local and dynalite on loopback, the input stream (2 shards) plus the prediction and dead-letter streams, the
model trained and registered in a local MLflow store if none is there yet, the real KCL daemon with our record
processors, a replay of real TLC rides with a few poison records mixed in, and a summary. The tests drive the same
pieces (:mod:`consumer.tools.harness`).
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

from consumer.tools.harness import (
    MODEL_ALIAS,
    MODEL_NAME,
    POISON_RECORDS,
    ConsumerProcess,
    consumer_env,
    ensure_model,
    metrics_summary,
    wait_for,
)
from consumer.tools.paths import DEFAULT_TRIPS, LOCAL_DIR

__all__ = ["run_demo"]


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def run_demo(
    *, rides: int = 3000, trips: str = DEFAULT_TRIPS, local_dir: Path = LOCAL_DIR, timeout: float = 240
) -> int:
    """Run the whole local path once and print what came out. Returns 0 when every record is accounted for."""
    from consumer.tools.localstack import LocalStack
    from consumer.tools.replay import put_payloads, replay, rmse
    from consumer.tools.tail import StreamReader
    from consumer.tools.training import local_store

    demo_dir = local_dir / "demo"
    run_id = uuid.uuid4().hex[:6]
    streams = {"input": "ride_events", "predictions": "ride_predictions", "dead_letters": "ride_dead_letters"}
    _say(f"state in {demo_dir} (MLflow store, model cache, logs); run {run_id}")
    with LocalStack(demo_dir / "emulators") as stack:
        _say(
            f"emulators up in {stack.timings.total:.1f}s: Kinesis {stack.kinesis_endpoint}, "
            f"DynamoDB {stack.dynamodb_endpoint}"
        )
        stack.create_stream(streams["input"], 2)
        stack.create_stream(streams["predictions"], 1)
        stack.create_stream(streams["dead_letters"], 1)
        _say("streams created: ride_events (2 shards), ride_predictions, ride_dead_letters")

        store = local_dir / "mlflow"
        _say(f"model: looking for {MODEL_NAME}@{MODEL_ALIAS} in {store} (training it if missing, ~1 min)")
        model_uri = ensure_model(store, trips)
        tracking_uri, _ = local_store(store)
        env = consumer_env(
            stack.env(),
            input_stream=streams["input"],
            predictions_stream=streams["predictions"],
            dead_letter_stream=streams["dead_letters"],
            model_uri=model_uri,
            tracking_uri=tracking_uri,
            application_name=f"ride-duration-demo-{run_id}",
            work_dir=demo_dir,
        )
        consumer = ConsumerProcess(env, demo_dir / f"consumer-{run_id}.log").start()
        _say(f"consumer started (python -m consumer run); its logs: {consumer.log_path}")
        try:
            kinesis = stack.kinesis_client()
            summary = replay(
                trips,
                client=kinesis,
                stream_name=streams["input"],
                limit=rides,
                skip_invalid=True,
                duration_range=(1, 60),
                progress=True,
            )
            put_payloads(kinesis, streams["input"], POISON_RECORDS)
            expected = summary.records_sent + len(POISON_RECORDS)
            _say(
                f"replayed {summary.records_sent} rides ({summary.records_per_second:.0f}/s) "
                f"+ {len(POISON_RECORDS)} poison records"
            )

            outputs = StreamReader(kinesis, streams["predictions"])
            dead = StreamReader(kinesis, streams["dead_letters"])
            predictions: list[Any] = []
            dead_letters: list[Any] = []
            started = time.monotonic()

            def progress() -> bool:
                predictions.extend(outputs.poll())
                dead_letters.extend(dead.poll())
                if not consumer.running():
                    raise RuntimeError(f"the consumer exited ({consumer.process.returncode}):\n{consumer.tail()}")
                return len(predictions) + len(dead_letters) >= expected

            def report() -> None:
                print(
                    f"\r[demo] {time.monotonic() - started:5.0f}s  predictions {len(predictions):5d}  "
                    f"dead letters {len(dead_letters):3d}  of {expected}  (the daemon's first lease "
                    f"takes ~30 s)",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

            done = wait_for(progress, timeout=timeout, interval=1.0, on_wait=report)
            report()
            print(file=sys.stderr)
            time.sleep(1.5)  # the last batch's counters follow its writes by a moment
            metrics = metrics_summary(consumer.metrics_url())
        finally:
            _say("stopping the consumer (SIGTERM: processors checkpoint, the daemon drains)")
            status = consumer.stop()
            _say(f"consumer exited with status {status}")

    predicted = {item.event["prediction"]["ride_id"]: item.event["prediction"]["ride_duration"] for item in predictions}
    error, scored = rmse(summary.ground_truth, predicted)
    print("\n=== ride-duration consumer demo ===")
    print(f"records in:        {expected} ({summary.records_sent} rides + {len(POISON_RECORDS)} poison)")
    print(f"predictions out:   {len(predictions)} (distinct rides {len(predicted)})")
    print(f"dead-lettered:     {len(dead_letters)}")
    reasons: dict[str, int] = {}
    for item in dead_letters:
        reasons[item.event["reason"]] = reasons.get(item.event["reason"], 0) + 1
    print(f"  by reason:       {dict(sorted(reasons.items()))}")
    print(f"online RMSE:       {error:.2f} minutes over {scored} rides (true duration from the replayed file)")
    print("a few prediction events:")
    for item in predictions[:3]:
        print(f"  {item.data.decode()}")
    print(f"model:             {model_uri} -> version {predictions[0].event['version'] if predictions else '?'}")
    print(f"/metrics said:     {metrics}")
    complete = bool(done) and len(predictions) + len(dead_letters) == expected
    print("result:            " + ("every record accounted for" if complete else "INCOMPLETE: see the consumer log"))
    return 0 if complete and status == 0 else 1
