import orjson

from consumer.pipeline.batch import decode_records, encode, score
from consumer.pipeline.events import Reason
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


def test_every_record_gets_exactly_one_outcome():
    batch = records(ride_payload(1), b"not json", ride_payload(2, distance=-5), ride_payload(3))
    accepted, rejected = decode_records(batch, "shardId-0")
    scored, failed = score(DistanceModel(), accepted)
    assert [item.ride.ride_id for item in scored] == [1, 3]
    assert [item.reason for item in rejected] == [Reason.NOT_JSON, Reason.OUT_OF_RANGE]
    assert failed == []
    assert [item.source.sequence_number for item in rejected] == ["101", "102"]


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
    assert model.calls <= 1 + 2 * 6  # log2(64) levels, two calls each


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
