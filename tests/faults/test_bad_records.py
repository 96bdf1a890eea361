"""Records no model can score, and a ride the model itself cannot score: each ends as exactly one dead letter with
its reason and payload; every other ride is predicted, unusual values (a negative or 99,999-mile trip, a zone id
outside 1..265) included."""

from __future__ import annotations

import base64
import hashlib
import random

import orjson

from consumer.pipeline.events import DEAD_LETTER_PAYLOAD_LIMIT, Reason
from consumer.tools.ledger import Outcome
from consumer.tools.replay import RideRow, put_payloads, read_rides, ride_payload
from consumer.tools.tail import read_all
from tests.faults.conftest import FRAGILE_ABOVE_MILES, log_events
from tests.support.models import trips_file

ONE_MIB = 1024 * 1024


def ride(ride_id: object = 1, **fields: object) -> bytes:
    values = {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66, **fields}
    return orjson.dumps({"ride": values, "ride_id": ride_id})


def raw_distance(text: str) -> bytes:
    """A ride whose distance is written as ``text`` (NaN and infinities are not JSON numbers)."""
    return b'{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": %s}, "ride_id": 1}' % text.encode()


def poison_kinds(rng: random.Random) -> list[tuple[bytes, str]]:
    """One payload of each kind and the reason it must be dead-lettered with."""
    return [
        (b"\xff\xfe\x00 latin-1 \xe9t\xe9", Reason.NOT_UTF8),
        (rng.randbytes(ONE_MIB - 64), Reason.NOT_UTF8),  # 1 MiB of garbage (the record limit minus the key)
        (b"{" * (ONE_MIB - 64), Reason.NOT_JSON),  # 1 MiB of text that is not JSON
        (b"{this is not json", Reason.NOT_JSON),
        (raw_distance("NaN"), Reason.NOT_JSON),
        (raw_distance("Infinity"), Reason.NOT_JSON),
        (raw_distance("1e999"), Reason.NOT_JSON),
        (b'["a", "list"]', Reason.NOT_AN_OBJECT),
        (b"42", Reason.NOT_AN_OBJECT),
        (ride(PULocationID="130"), Reason.WRONG_TYPE),
        (ride(trip_distance="3.66"), Reason.WRONG_TYPE),
        (ride(DOLocationID=20.5), Reason.WRONG_TYPE),
        (ride(ride_id=True), Reason.WRONG_TYPE),
        (orjson.dumps({"ride": [130, 205, 3.66], "ride_id": 1}), Reason.WRONG_TYPE),
        (orjson.dumps({"ride_id": 1}), Reason.MISSING_FIELD),
        (orjson.dumps({"ride": {"PULocationID": 130, "DOLocationID": 205}, "ride_id": 1}), Reason.MISSING_FIELD),
        (orjson.dumps({"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 1}}), Reason.MISSING_FIELD),
        (ride(trip_distance=None), Reason.MISSING_FIELD),
        (ride(ride_id="x" * 300), Reason.RIDE_ID_TOO_LONG),
        (ride(ride_id="é" * 257), Reason.RIDE_ID_TOO_LONG),
    ]


def unusual_rides(first_ride_id: int) -> list[tuple[bytes, str]]:
    """Rides with values no taxi ride has, which the model scores all the same, five of each kind."""
    values = [{"trip_distance": -2.5}, {"trip_distance": 99_999.0}, {"PULocationID": 999}, {"DOLocationID": 0}]
    return [
        (ride(first_ride_id + index, **values[index % len(values)]), str(first_ride_id + index)) for index in range(20)
    ]


def real_rides(count: int) -> list[RideRow]:
    """The first ``count`` complete rides of the real January file, under 60 miles."""
    rides = []
    for row in read_rides(trips_file()):
        if None not in (row.pu_location_id, row.do_location_id, row.trip_distance) and row.trip_distance < 60:
            rides.append(row)
            if len(rides) == count:
                break
    return rides


def test_five_percent_poison_of_every_kind_is_dead_lettered_with_its_reason(scenario):
    run = scenario(input_shards=2)
    rng = random.Random(3)
    kinds = poison_kinds(rng)
    huge = [kind for kind in kinds if len(kind[0]) > DEAD_LETTER_PAYLOAD_LIMIT]
    small = [kind for kind in kinds if len(kind[0]) <= DEAD_LETTER_PAYLOAD_LIMIT]
    # 5% of 2,000 records: each huge one once (kinesis-local takes seconds per MiB), the small kinds 5-6 times.
    poison = huge + [small[index % len(small)] for index in range(100 - len(huge))]
    rides = [(ride_payload(row), str(row.ride_id)) for row in real_rides(1880)] + unusual_rides(900_000)
    records = rides + [(payload, f"poison-{index}") for index, (payload, _) in enumerate(poison)]
    rng.shuffle(records)
    put_payloads(run.kinesis, run.input, records)
    expected_reason = {hashlib.sha256(payload).hexdigest(): reason for payload, reason in poison}

    consumer = run.start()
    ledger = run.wait_until_accounted(2000)
    run.record(ledger)

    assert ledger.complete, ledger.as_dict()
    counts = ledger.counts
    assert (counts["predicted"], counts["dead_lettered"], counts["duplicated"]) == (1900, 100, 0)
    dead = read_all(run.kinesis, run.dead_letters, expect=100, timeout=30)
    for item in dead:
        event = item.event
        assert event["reason"] == expected_reason[event["payload_sha256"]], event["detail"]
        assert event["detail"]
        carried = base64.b64decode(event["payload_base64"])
        assert len(carried) == min(event["payload_size_bytes"], DEAD_LETTER_PAYLOAD_LIMIT)
        assert event["payload_truncated"] == (event["payload_size_bytes"] > DEAD_LETTER_PAYLOAD_LIMIT)
    assert sum(item.event["payload_truncated"] for item in dead) == len(huge) == 2
    assert consumer.running(), run.tails()


def long_trip(row: RideRow) -> bytes:
    """A valid ride (under the 1,000-mile limit) too long for the fragile model."""
    return ride(
        row.ride_id,
        PULocationID=row.pu_location_id,
        DOLocationID=row.do_location_id,
        trip_distance=FRAGILE_ABOVE_MILES + 31,
    )


def test_a_ride_that_makes_the_model_raise_is_dead_lettered_by_bisection_and_its_neighbours_predicted(scenario):
    run = scenario(input_shards=1)
    rows = real_rides(300)
    fragile_ids = {rows[40].ride_id, rows[41].ride_id, rows[250].ride_id}
    payloads = [(long_trip(row) if row.ride_id in fragile_ids else ride_payload(row), str(row.ride_id)) for row in rows]
    put_payloads(run.kinesis, run.input, payloads)

    consumer = run.start(model_uri=run.models.fragile, MODEL_TRUSTED_TYPES=run.models.fragile_trusted_types)
    ledger = run.wait_until_accounted(300)
    run.record(ledger)

    assert ledger.complete, ledger.as_dict()
    assert (ledger.counts["predicted"], ledger.counts["dead_lettered"], ledger.counts["duplicated"]) == (297, 3, 0)
    assert ledger.reasons == {Reason.MODEL_ERROR: 3}
    dead = read_all(run.kinesis, run.dead_letters, expect=3, timeout=30)
    assert {orjson.loads(base64.b64decode(item.event["payload_base64"]))["ride_id"] for item in dead} == fragile_ids
    assert all("infinity" in item.event["detail"] for item in dead)
    fates = list(ledger.records)
    for index, fate in enumerate(fates):
        if fate.outcome is Outcome.DEAD_LETTERED:
            neighbours = [fates[i] for i in (index - 1, index + 1) if 0 <= i < len(fates)]
            assert any(n.outcome is Outcome.PREDICTED for n in neighbours)
    batches = [event for event in log_events(consumer) if event.get("event") == "batch_done"]
    assert any(batch["predicted"] and batch["dead_lettered"] for batch in batches), batches
