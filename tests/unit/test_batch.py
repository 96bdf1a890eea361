import orjson
import pytest

from consumer.errors import BatchDeadlineExceeded, ModelBroken
from consumer.model.features import PROBE_RIDES
from consumer.pipeline.batch import decode_records, encode, score
from consumer.pipeline.deadline import Deadline
from consumer.pipeline.events import Reason, Unusual
from tests.support.factories import records, ride_payload


class DistanceModel:
    """Predicts 2 minutes per mile; raises on a chosen distance, like a model that cannot handle some rides."""

    def __init__(self, poison_distance: float | None = None) -> None:
        self.poison_distance = poison_distance
        self.calls = 0

    def predict(self, rides):
        self.calls += 1
        if any(ride.trip_distance == self.poison_distance for ride in rides):
            raise ValueError("cannot score this ride")
        return [ride.trip_distance * 2 for ride in rides]


class BrokenModel:
    """Fails on every call, whatever the rides: a broken session, a MemoryError."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error or MemoryError("cannot allocate")
        self.calls: list[int] = []

    def predict(self, rides):
        self.calls.append(len(rides))
        raise self.error


def test_every_record_gets_exactly_one_outcome():
    batch = records(
        ride_payload(1), b"not json", ride_payload(2, distance=-5), ride_payload(3), ride_payload("x" * 300)
    )
    accepted, rejected = decode_records(batch, "shardId-0")
    scored, failed = score(DistanceModel(), accepted)
    assert [item.ride.ride_id for item in scored] == [1, 2, 3]
    assert [item.reason for item in rejected] == [Reason.NOT_JSON, Reason.RIDE_ID_TOO_LONG]
    assert failed == []
    assert [item.source.sequence_number for item in rejected] == ["101", "104"]


def test_rides_with_unusual_values_are_scored_and_say_what_is_unusual():
    batch = records(
        ride_payload(1, distance=224_481.38), ride_payload(2, pu=999), ride_payload(3), ride_payload(4, distance=-2)
    )
    accepted, rejected = decode_records(batch, "shardId-0")
    scored, failed = score(DistanceModel(), accepted)

    assert rejected == failed == []
    assert [item.ride.ride_id for item in scored] == [1, 2, 3, 4]
    assert [item.unusual for item in accepted] == [
        (Unusual.LONG_DISTANCE,),
        (Unusual.UNKNOWN_ZONE,),
        (),
        (Unusual.NEGATIVE_DISTANCE,),
    ]


def test_the_whole_batch_is_scored_in_one_model_call():
    model = DistanceModel()
    accepted, _ = decode_records(records(*(ride_payload(i) for i in range(1000))), "shardId-0")
    scored, _ = score(model, accepted)
    assert model.calls == 1
    assert len(scored) == 1000


def test_a_ride_that_makes_the_model_raise_is_isolated_by_bisection():
    payloads = [ride_payload(i, distance=1.0 + i) for i in range(64)]
    payloads[37] = ride_payload(37, distance=999.0)
    accepted, _ = decode_records(records(*payloads), "shardId-0")
    model = DistanceModel(poison_distance=999.0)
    scored, failed = score(model, accepted)
    assert len(scored) == 63
    assert len(failed) == 1
    assert failed[0].reason == Reason.MODEL_ERROR
    assert "cannot score this ride" in failed[0].detail
    assert failed[0].payload == payloads[37]
    assert model.calls <= 1 + 1 + 2 * 6  # the batch, the probe, then log2(64) levels of two calls each


def test_a_model_that_fails_on_the_whole_batch_and_on_the_probe_rides_is_broken():
    model = BrokenModel()
    accepted, _ = decode_records(records(*(ride_payload(i) for i in range(100))), "shardId-0")

    with pytest.raises(ModelBroken, match=r"all 100 rides of the batch \(MemoryError: cannot allocate\)"):
        score(model, accepted)
    assert model.calls == [100, len(PROBE_RIDES)]  # no bisection: no ride is at fault


def test_a_broken_model_is_told_from_a_single_ride_it_cannot_score():
    class OneBadRide(DistanceModel):
        pass

    accepted, _ = decode_records(records(ride_payload(1, distance=999.0)), "shardId-0")

    scored, failed = score(OneBadRide(poison_distance=999.0), accepted)
    assert scored == []
    assert [item.reason for item in failed] == [Reason.MODEL_ERROR]

    with pytest.raises(ModelBroken):
        score(BrokenModel(), accepted)


def test_a_model_that_gives_no_finite_prediction_at_all_is_broken():
    class NanModel:
        def predict(self, rides):
            return [float("nan")] * len(rides)

    accepted, _ = decode_records(records(ride_payload(1), ride_payload(2)), "s")
    with pytest.raises(ModelBroken, match="not finite"):
        score(NanModel(), accepted)


def test_rides_that_all_fail_while_the_probe_scores_are_dead_lettered():
    accepted, _ = decode_records(records(*(ride_payload(i, distance=999.0) for i in range(5))), "shardId-0")

    scored, failed = score(DistanceModel(poison_distance=999.0), accepted)

    assert scored == []
    assert [item.reason for item in failed] == [Reason.MODEL_ERROR] * 5


def test_without_probe_rides_a_whole_batch_failure_is_blamed_on_the_rides():
    accepted, _ = decode_records(records(ride_payload(1), ride_payload(2)), "shardId-0")

    scored, failed = score(BrokenModel(), accepted, probe=())

    assert scored == [] and [item.reason for item in failed] == [Reason.MODEL_ERROR] * 2


def test_no_predict_call_starts_after_the_deadline():
    now = [0.0]

    class SlowFailing(DistanceModel):
        def predict(self, rides):
            now[0] += 10.0  # each call takes 10 s of the fake clock
            return super().predict(rides)

    accepted, _ = decode_records(records(*(ride_payload(i, distance=999.0 if i == 5 else 1.0) for i in range(64))), "s")
    model = SlowFailing(poison_distance=999.0)

    with pytest.raises(
        BatchDeadlineExceeded, match=r"deadline of 35 s \(BATCH_DEADLINE_SECONDS\) passed while isolating"
    ):
        score(model, accepted, deadline=Deadline(35.0, clock=lambda: now[0]))
    assert model.calls == 4  # the batch, the probe, two halves: the deadline passed at 40 s


def test_a_non_finite_prediction_is_dead_lettered():
    class NanModel:
        def predict(self, rides):
            return [float("nan") if ride.ride_id == 2 else 1.0 for ride in rides]

    accepted, _ = decode_records(records(ride_payload(1), ride_payload(2)), "s")
    scored, failed = score(NanModel(), accepted)
    assert [item.ride.ride_id for item in scored] == [1]
    assert failed[0].reason == Reason.MODEL_ERROR


def test_an_empty_batch_does_not_call_the_model():
    model = DistanceModel()
    assert score(model, []) == ([], [])
    assert model.calls == 0


def test_encode_keys_predictions_by_ride_id_and_dead_letters_by_the_original_key():
    accepted, rejected = decode_records(records(ride_payload("r-9"), b"\x00"), "shardId-7")
    scored, _ = score(DistanceModel(), accepted)
    encoded = encode(scored, rejected, version="3", input_stream="rides")
    assert [entry.partition_key for entry in encoded.predictions] == ["r-9"]
    assert [entry.partition_key for entry in encoded.dead_letters] == ["pk-1"]
    prediction = orjson.loads(encoded.predictions[0].data)
    assert prediction["prediction"] == {"ride_duration": 7.32, "ride_id": "r-9"}
    assert prediction["version"] == "3"
    assert prediction["event_id"] == "shardId-7:100:0"
