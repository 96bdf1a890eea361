"""The output side fails: PutRecords entries throttled for a while, the prediction stream deleted while the
consumer runs. Nothing written is lost and nothing is checkpointed past an unwritten record."""

from __future__ import annotations

from consumer.tools.harness import POISON_RECORDS, wait_for
from consumer.tools.ledger import build_ledger, read_stream, shard_parents
from consumer.tools.replay import put_payloads
from tests.faults.conftest import log_events
from tests.faults.kinesis_proxy import ThrottleEntries
from tests.faults.test_crashes import WARM_UP, last_written, steady_load, warmed_up


def test_thirty_percent_of_entries_throttled_for_a_while_costs_retries_not_rides(scenario):
    run = scenario(input_shards=2)
    # Each attempt fails an entry with p = 0.3, independently: with 15 attempts the chance that one of ~1,600
    # entries fails them all is 1,600 x 0.3^15, about 2e-5. (With the default 8 it would be about 10%: the shard
    # would stop and replay its batch, duplicating it under the same ids, never losing it.)
    consumer = run.start(PUT_MAX_ATTEMPTS="15")
    warmed_up(run)
    throttles = [
        run.proxy.add(ThrottleEntries(stream, fraction=0.3, seed=11)) for stream in (run.predictions, run.dead_letters)
    ]
    put_payloads(run.kinesis, run.input, POISON_RECORDS)
    load = steady_load(run)
    summary = load.result()
    run.wait_for_outputs(WARM_UP + len(POISON_RECORDS) + summary.records_sent // 2)
    for rule in throttles:
        run.proxy.remove(rule)

    ledger = run.wait_until_accounted(WARM_UP + len(POISON_RECORDS) + summary.records_sent)
    run.record(ledger)
    assert ledger.complete, ledger.as_dict()
    assert (ledger.counts["missing"], ledger.counts["duplicated"]) == (0, 0)
    assert ledger.counts["dead_lettered"] == len(POISON_RECORDS)
    assert run.proxy.stats[(run.predictions, "entries_failed")] > 0.2 * summary.records_sent
    assert run.proxy.stats[(run.dead_letters, "entries_failed")] > 0
    retries = [event for event in log_events(consumer) if event.get("event") == "put_records_retry"]
    assert retries, run.tails()
    assert all("ProvisionedThroughputExceededException" in event["cause"] for event in retries)
    assert max(event["backoff_seconds"] for event in retries) > 0
    batches = [event["seconds"] for event in log_events(consumer) if event.get("event") == "batch_done"]
    print(
        f"{len(retries)} retries, {run.proxy.stats[(run.predictions, 'entries_failed')]} prediction entries "
        f"throttled, longest backoff {max(event['backoff_seconds'] for event in retries):.2f} s, "
        f"highest attempt {max(event['attempt'] for event in retries)}, longest batch {max(batches):.1f} s"
    )
    assert consumer.running(), run.tails()


def test_a_deleted_output_stream_stops_the_processor_with_its_name_and_a_restart_after_recreating_it_loses_nothing(
    scenario,
):
    run = scenario(input_shards=2)
    first = run.start()
    warmed_up(run)
    # What the prediction stream holds now goes with it: keep a copy for the ledger.
    before = read_stream(run.kinesis, run.predictions)
    assert wait_for(
        lambda: {s: lease["checkpoint"] for s, lease in run.leases().items()} == last_written(run.ledger()),
        timeout=30,
    )
    checkpoints = {shard: lease["checkpoint"] for shard, lease in run.leases().items()}

    run.kinesis.delete_stream(StreamName=run.predictions, EnforceConsumerDeletion=True)
    assert wait_for(lambda: run.predictions not in run.kinesis.list_streams()["StreamNames"], timeout=30)
    put_payloads(run.kinesis, run.input, POISON_RECORDS)
    more = run.load(300, rate=1000, start_ride_id=1001).result().records_sent

    assert wait_for(lambda: not first.running(), timeout=120), run.tails()
    assert first.process is not None and first.process.returncode != 0
    failures = [event for event in log_events(first) if event.get("event") == "batch_failed"]
    assert failures, run.tails()
    assert all(run.predictions in event["error"] and "ResourceNotFound" in event["error"] for event in failures)
    assert {shard: lease["checkpoint"] for shard, lease in run.leases().items()} == checkpoints

    run.stack.create_stream(run.predictions, 1)
    run.start()
    expected = WARM_UP + len(POISON_RECORDS) + more

    def settled():
        ledger = build_ledger(
            read_stream(run.kinesis, run.input),
            before + read_stream(run.kinesis, run.predictions),
            read_stream(run.kinesis, run.dead_letters),
            parents=shard_parents(run.kinesis, run.input),
        )
        return ledger if ledger.counts["in"] == expected and ledger.complete else None

    ledger = wait_for(settled, timeout=180, interval=2)
    assert ledger is not None, run.tails()
    run.record(ledger)
    counts = ledger.counts
    assert (counts["missing"], counts["predicted"], counts["dead_lettered"]) == (0, WARM_UP + more, 10)
    # Dead letters are written before predictions: the failed batches wrote theirs, then wrote them again.
    assert counts["differing_copies"] == 0
