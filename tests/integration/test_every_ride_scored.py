"""Every ride the model can score is scored: 3,000 real rides of the last week of January 2022, as the replayer
sends them, through the batch steps with the prepared model (both scoring paths): none is dead-lettered, and the
unusual ones (meter readings over 1,000 miles) are counted instead."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from consumer.model.prepare import prepare
from consumer.model.scorer import load_prepared
from consumer.pipeline.batch import decode_records, score
from consumer.pipeline.events import Unusual
from consumer.tools.replay import read_rides, ride_payload
from tests.support.factories import FakeRecord
from tests.support.models import TRIPS

pytestmark = [
    pytest.mark.usefixtures("mlflow_isolation"),
    pytest.mark.skipif(not TRIPS.exists(), reason=f"{TRIPS} is not on this machine"),
]

RIDES = 3_000


def last_week_rides() -> list[FakeRecord]:
    """The last 3,000 rides picked up from 25 January on, in file order, as ``consumer replay`` writes them."""
    pickups = pd.read_parquet(TRIPS, columns=["lpep_pickup_datetime"])["lpep_pickup_datetime"]
    rows = set(pickups.index[pickups >= pd.Timestamp("2022-01-25")][-RIDES:])
    rides = [ride for ride in read_rides(TRIPS) if ride.ride_id - 1 in rows]
    return [FakeRecord(ride_payload(ride), str(ride.ride_id), partition_key=str(ride.ride_id)) for ride in rides]


@pytest.mark.parametrize("prefer_compiled", [True, False], ids=["onnx", "sklearn"])
def test_three_thousand_real_rides_of_the_last_week_are_all_predicted(prefer_compiled, trained_skops, tmp_path):
    records = last_week_rides()
    scorer = load_prepared(
        prepare(trained_skops.result.model_uri, tmp_path, tracking_uri=trained_skops.store.tracking_uri),
        prefer_compiled=prefer_compiled,
    )

    accepted, rejected = decode_records(records, "shardId-000000000000")
    scored, failed = score(scorer, accepted)

    assert len(records) == RIDES
    assert rejected == failed == []
    assert len(scored) == RIDES
    unusual = Counter(kind for item in accepted for kind in item.unusual)
    assert unusual == {Unusual.LONG_DISTANCE: 18}  # what the 1,000-mile bound used to dead-letter
