"""The whole slice on the real KCL MultiLangDaemon: rides in, predictions and dead letters out, checkpoints in
the lease table, and a restart that resumes exactly where the last checkpoint left off."""

from __future__ import annotations

import base64
import time
from collections import Counter

import numpy as np

from consumer.model.features import features
from consumer.model.prepared import TOLERANCE_MINUTES
from consumer.pipeline.events import decode_ride
from consumer.tools.harness import POISON_RECORDS, wait_for
from consumer.tools.replay import put_payloads, replay
from consumer.tools.tail import read_all
from tests.support.stack import lease_table

POISON = (POISON_RECORDS * 2)[:20]


def lease_checkpoints(local_stack, application: str) -> dict[str, str]:
    return {shard: lease["checkpoint"] for shard, lease in lease_table(local_stack, application).items()}


def last_sequence_per_shard(kinesis, stream: str) -> dict[str, str]:
    last: dict[str, str] = {}
    for record in read_all(kinesis, stream, expect=None, timeout=10):
        if record.shard_id not in last or int(record.sequence_number) > int(last[record.shard_id]):
            last[record.shard_id] = record.sequence_number
    return last


def pipeline_predictions(registered_model, rides) -> np.ndarray:
    """What the registered pipeline itself says, loaded through MLflow, in one batch."""
    import mlflow

    mlflow.set_tracking_uri(registered_model.tracking_uri)
    pipeline = mlflow.sklearn.load_model(registered_model.uri)
    return pipeline.predict([features(ride) for ride in rides])


def test_rides_become_predictions_and_poison_becomes_dead_letters(
    local_stack, streams, start_consumer, registered_model, trips_file
):
    kinesis = local_stack.kinesis_client()
    sent = replay(trips_file, client=kinesis, stream_name=streams.input, limit=1980, skip_invalid=True, progress=False)
    put_payloads(kinesis, streams.input, POISON)
    assert sent.records_sent == 1980

    consumer = start_consumer()
    outputs = wait_for(
        lambda: (
            len(read_all(kinesis, streams.predictions, timeout=1)) >= 1980
            and len(read_all(kinesis, streams.dead_letters, timeout=1)) >= 20
        ),
        timeout=180,
        interval=2,
    )
    assert outputs, f"not every record came out in time; consumer log:\n{consumer.tail()}"
    predictions = read_all(kinesis, streams.predictions, timeout=5)
    dead_letters = read_all(kinesis, streams.dead_letters, timeout=5)

    assert len(predictions) == 1980
    assert sorted(item.event["prediction"]["ride_id"] for item in predictions) == sorted(sent.ground_truth)
    assert {item.event["version"] for item in predictions} == {registered_model.version}
    assert all(item.partition_key == str(item.event["prediction"]["ride_id"]) for item in predictions)

    inputs = {record.sequence_number: record for record in read_all(kinesis, streams.input, timeout=10)}
    rides = [decode_ride(inputs[item.event["event_id"].split(":")[1]].data) for item in predictions]
    expected = pipeline_predictions(registered_model, rides)
    got = np.array([item.event["prediction"]["ride_duration"] for item in predictions])
    assert np.max(np.abs(got - expected)) <= TOLERANCE_MINUTES  # the shards score the compiled fast path

    assert len(dead_letters) == 20
    assert Counter(base64.b64decode(item.event["payload_base64"]) for item in dead_letters) == Counter(
        payload for payload, _ in POISON
    )
    assert all(item.event["reason"] and item.event["detail"] for item in dead_letters)

    last = last_sequence_per_shard(kinesis, streams.input)
    checkpoints = wait_for(
        lambda: (lambda seen: seen if seen == last else None)(
            lease_checkpoints(local_stack, consumer.env["KCL_APPLICATION_NAME"])
        ),
        timeout=30,
    )
    assert checkpoints == last

    assert consumer.stop() == 0, consumer.tail()
    assert "batch_done" in consumer.log_path.read_text()
    assert "Received error line from subprocess" not in consumer.log_path.read_text()


def test_a_restart_resumes_from_the_checkpoint_without_repeats(local_stack, streams, start_consumer, trips_file):
    kinesis = local_stack.kinesis_client()
    replay(trips_file, client=kinesis, stream_name=streams.input, limit=300, skip_invalid=True, progress=False)
    first = start_consumer()
    assert wait_for(lambda: len(read_all(kinesis, streams.predictions, timeout=1)) >= 300, timeout=180, interval=2), (
        first.tail()
    )
    assert first.stop() == 0, first.tail()

    replay(
        trips_file,
        client=kinesis,
        stream_name=streams.input,
        limit=100,
        skip_invalid=True,
        progress=False,
        start_ride_id=100_001,
    )
    second = start_consumer()
    assert wait_for(lambda: len(read_all(kinesis, streams.predictions, timeout=1)) >= 400, timeout=120, interval=2), (
        second.tail()
    )
    time.sleep(3)  # a repeat, if any, would come with the first batches after the restart
    predictions = read_all(kinesis, streams.predictions, timeout=5)
    assert second.stop() == 0, second.tail()

    assert len(predictions) == 400
    event_ids = Counter(item.event["event_id"] for item in predictions)
    assert max(event_ids.values()) == 1
    ride_ids = [item.event["prediction"]["ride_id"] for item in predictions]
    assert len(set(ride_ids)) == 400
    assert sum(ride_id > 100_000 for ride_id in ride_ids) == 100
