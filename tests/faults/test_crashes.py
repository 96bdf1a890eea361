"""The consumer dies or is stopped under steady load; the lease store goes away and comes back. The ledger shows
that no ride is lost, and that a ride written twice carries the same event id both times."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import psutil
import pytest

from consumer.tools.harness import wait_for
from consumer.tools.ledger import Ledger
from tests.faults.conftest import Load, Scenario, log_events
from tests.faults.kinesis_proxy import HoldCalls

WARM_UP = 50  # rides put before the steady load, to know the consumer has its leases and is scoring


def warmed_up(run: Scenario) -> None:
    run.load(WARM_UP, rate=1000, start_ride_id=1).result()
    run.wait_for_outputs(WARM_UP, timeout=150)


def steady_load(run: Scenario, rides: int = 2000, rate: float = 100) -> Load:
    """Rides from id 1,001 on, ``rate`` a second, in the background."""
    return run.load(rides, rate=rate, start_ride_id=1001)


def under_steady_load(run: Scenario) -> Load:
    """Warm the started consumers up, start the steady load and wait until its first 150 rides are out."""
    warmed_up(run)
    load = steady_load(run)
    run.wait_for_outputs(WARM_UP + 150)
    return load


def _iso(epoch: float) -> str:
    """An epoch time as the logs write it (ISO 8601 UTC), for comparing timestamps as strings."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def last_written(ledger: Ledger) -> dict[str, str]:
    """Per input shard, the sequence number of the last record that has an event."""
    last: dict[str, str] = {}
    for fate in ledger.records:
        if fate.copies and int(fate.sequence_number) > int(last.get(fate.shard_id, "0")):
            last[fate.shard_id] = fate.sequence_number
    return last


def test_kill_9_mid_batch_then_a_restart_with_the_same_worker_id_loses_nothing(scenario):
    run = scenario(input_shards=2)
    first = run.start()
    load = under_steady_load(run)

    # The next prediction put is written by kinesis-local but its answer is held: the batch is mid-flight, its
    # predictions in the stream, its checkpoint not taken. Then the whole consumer is killed.
    held = run.proxy.add(HoldCalls(run.predictions, calls=1))
    assert held.holding.wait(60), run.tails()
    assert first.kill() == -9
    held.release()
    second = run.start()  # the same worker id: it re-adopts its leases at once

    ledger = run.wait_until_accounted(WARM_UP + load.result().records_sent)
    run.record(ledger)
    assert ledger.complete, ledger.as_dict()
    counts = ledger.counts
    assert counts["missing"] == 0
    assert counts["duplicated"] >= 1  # the held batch, replayed from the last checkpoint
    assert counts["differing_copies"] == 0
    assert second.running(), run.tails()


def test_sigterm_under_load_checkpoints_the_last_written_record_and_a_restart_repeats_nothing(scenario):
    run = scenario(input_shards=2)
    consumer = run.start()
    load = under_steady_load(run)

    asked = time.monotonic()
    status = consumer.stop(timeout=90)
    stopped_after = time.monotonic() - asked
    print(f"SIGTERM to exit: {stopped_after:.1f} s (shutdownGraceMillis 20000)")
    # 0 means the daemon drained on its own: past its grace the launcher kills it and exits non-zero.
    assert status == 0, run.tails()
    drained = [e for e in log_events(consumer) if e.get("event") == "shutdown_requested" and "shard_id" in e]
    assert {event["shard_id"] for event in drained} == set(run.leases()), drained

    summary = load.result()
    at_stop = run.ledger()
    checkpoints = {shard: lease["checkpoint"] for shard, lease in run.leases().items()}
    assert checkpoints == last_written(at_stop)
    assert at_stop.counts["duplicated"] == 0
    assert at_stop.counts["missing"] > 0  # the load went on after the stop: the restart has work to do

    restarted = run.start()
    ledger = run.wait_until_accounted(WARM_UP + summary.records_sent)
    run.record(ledger)
    assert ledger.complete, ledger.as_dict()
    assert (ledger.counts["missing"], ledger.counts["duplicated"]) == (0, 0)
    assert restarted.stop() == 0


def test_two_workers_on_four_shards_one_killed_the_other_takes_its_leases(scenario):
    run = scenario(input_shards=4)
    survivor = run.start("worker-1")
    victim = run.start("worker-2")
    warmed_up(run)

    def owners() -> set[str]:
        return {lease["owner"] for lease in run.leases().values()}

    assert wait_for(lambda: owners() == {"worker-1", "worker-2"}, timeout=120, interval=2), run.leases()
    load = steady_load(run)
    run.wait_for_outputs(WARM_UP + 150)
    orphaned = {shard for shard, lease in run.leases().items() if lease["owner"] == "worker-2"}
    killed_at = time.time()
    assert victim.kill() == -9

    assert wait_for(lambda: owners() == {"worker-1"}, timeout=120, interval=2), run.leases()
    ledger = run.wait_until_accounted(WARM_UP + load.result().records_sent, timeout=240)
    run.record(ledger)
    taken_over = {
        event["shard_id"]
        for event in log_events(survivor)
        if event.get("event") == "batch_done" and event.get("timestamp", "") > _iso(killed_at)
    }
    assert orphaned <= taken_over
    assert ledger.complete, ledger.as_dict()
    counts = ledger.counts
    assert counts["missing"] == 0
    # At-least-once: the victim's last batches may come again from worker-1, always under the same event id.
    assert (counts["differing_copies"], counts["unmatched"], counts["mismatched"]) == (0, 0, 0)
    assert survivor.running(), run.tails()


def test_a_restarted_lease_store_with_its_data_recovers_without_a_restart(scenario):
    run = scenario(input_shards=2)
    consumer = run.start()
    load = under_steady_load(run)

    run.stack.restart_dynamodb(down_seconds=5)

    summary = load.result()
    ledger = run.wait_until_accounted(WARM_UP + summary.records_sent)
    run.record(ledger)
    assert ledger.complete, ledger.as_dict()
    assert ledger.counts["missing"] == 0
    assert consumer.running(), run.tails()
    final = last_written(ledger)
    assert wait_for(lambda: {s: lease["checkpoint"] for s, lease in run.leases().items()} == final, timeout=30)


@pytest.mark.parametrize("fork_server", ["true", "false"])
def test_a_hung_processor_halts_the_daemon_after_timeout_in_seconds_and_the_restart_replays(scenario, fork_server):
    run = scenario(input_shards=1)
    # timeoutInSeconds=5 here (180 in production) so the daemon gives up before the sink's own 10 s read timeout.
    hung = run.start(KCL_EXTRA_PROPERTIES=json.dumps({"timeoutInSeconds": "5"}), SHARD_FORK_SERVER=fork_server)
    warmed_up(run)
    held = run.proxy.add(HoldCalls(run.predictions, calls=1, max_seconds=60))
    load = run.load(300, rate=1000, start_ride_id=1001)
    assert held.holding.wait(60), run.tails()
    assert hung.process is not None
    started_by_it = psutil.Process(hung.process.pid).children(recursive=True)  # the hung processor among them

    assert wait_for(lambda: not hung.running(), timeout=60), run.tails()
    assert hung.process.returncode == 1
    left = [p for p in started_by_it if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"processes outlived the halted daemon: {[p.cmdline() for p in left]}"
    assert "Timedout to get status message for processRecords" in hung.log_path.read_text()
    held.release()

    run.start()
    ledger = run.wait_until_accounted(WARM_UP + load.result().records_sent)
    run.record(ledger)
    assert ledger.complete, ledger.as_dict()
    assert ledger.counts["missing"] == 0
    assert ledger.counts["duplicated"] >= 1  # the hung batch's predictions were written, then replayed
