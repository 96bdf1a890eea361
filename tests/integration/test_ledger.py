"""`python -m consumer ledger` reads the three streams and accounts for every input record."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from consumer.pipeline.events import SourceRecord, decode_ride, prediction_event
from consumer.tools.paths import REPO_ROOT
from consumer.tools.replay import put_payloads
from consumer.tools.tail import read_all
from tests.support.factories import ride_payload


def test_the_ledger_command_names_the_record_that_has_no_event(local_stack, make_stream):
    kinesis = local_stack.kinesis_client()
    rides, predictions, dead_letters = make_stream(1), make_stream(1), make_stream(1)
    put_payloads(kinesis, rides, [(ride_payload(ride_id), str(ride_id)) for ride_id in (1, 2, 3)])
    inputs = read_all(kinesis, rides, expect=3)
    events = [
        (
            prediction_event(
                decode_ride(record.data),
                12.5,
                version="1",
                source=SourceRecord(record.shard_id, record.sequence_number, 0, record.partition_key, 0),
            ),
            record.partition_key,
        )
        for record in inputs[:2]
    ]
    put_payloads(kinesis, predictions, events + events[:1])  # the first one twice, the third never

    env = {**os.environ, **local_stack.env()}
    command = [sys.executable, "-m", "consumer", "ledger", "--input", rides, "--predictions", predictions]
    command += ["--dead-letters", dead_letters, "--settle", "0", "--json"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, timeout=60)

    assert result.returncode == 1, result.stderr
    report = orjson.loads(result.stdout)
    assert report["counts"]["in"] == 3
    assert report["counts"]["predicted"] == 2
    assert report["counts"]["missing"] == 1
    assert report["counts"]["duplicated"] == 1
    assert report["examples"]["missing"] == [f"{inputs[2].shard_id}:{inputs[2].sequence_number}:0"]
    assert report["complete"] is False
