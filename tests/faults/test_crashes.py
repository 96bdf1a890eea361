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


#: For the two scenarios below: the daemon halts a processor that has not answered for 35 s (180 in production),
#: and a batch gives up 5 s after it started (120 in production), which leaves the launcher's 30 s margin.
QUICK_HALT = {"KCL_EXTRA_PROPERTIES": json.dumps({"timeoutInSeconds": "35"}), "BATCH_DEADLINE_SECONDS": "5"}


def shard_processes(consumer) -> list[psutil.Process]:
    """The processes that answer the daemon for a shard: the record processors and the fork server's workers."""
    assert consumer.process is not None
    found = []
    for process in psutil.Process(consumer.process.pid).children(recursive=True):
        command = " ".join(process.cmdline())
        if "record_processor.py" in command:
            found.append(process)
        elif "consumer.runtime.forkserver" in command:
            found.extend(process.children())
    return found


@pytest.mark.parametrize("fork_server", ["true", "false"])
def test_a_put_held_past_the_batch_deadline_stops_the_shard_and_the_restart_replays(scenario, fork_server):
    run = scenario(input_shards=1)
    held_up = run.start(SHARD_FORK_SERVER=fork_server, **QUICK_HALT)
    warmed_up(run)
    held = run.proxy.add(HoldCalls(run.predictions, calls=1, max_seconds=60))
    load = run.load(300, rate=1000, start_ride_id=1001)
    assert held.holding.wait(60), run.tails()
    assert held_up.process is not None
    started_by_it = psutil.Process(held_up.process.pid).children(recursive=True)

    # The held call ends at the client's 10 s read timeout; the deadline has passed, so no retry: the shard stops
    # on its own, long before the daemon's timeoutInSeconds.
    assert wait_for(lambda: not held_up.running(), timeout=60), run.tails()
    assert held_up.process.returncode == 1
    left = [p for p in started_by_it if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"processes outlived the stopped daemon: {[p.cmdline() for p in left]}"
    failed = [event for event in log_events(held_up) if event.get("event") == "batch_failed"]
    assert failed and "BATCH_DEADLINE_SECONDS" in failed[0]["error"], run.tails()
    assert "Timedout to get status message" not in held_up.log_path.read_text()
    held.release()

    run.start()
    ledger = run.wait_until_accounted(WARM_UP + load.result().records_sent)
    run.record(ledger)
    assert ledger.complete, ledger.as_dict()
    assert ledger.counts["missing"] == 0
    assert ledger.counts["duplicated"] >= 1  # the held batch's predictions were written, then replayed


@pytest.mark.parametrize("fork_server", ["true", "false"])
def test_a_processor_that_stops_answering_halts_the_daemon_after_timeout_in_seconds_and_the_restart_replays(
    scenario, fork_server
):
    run = scenario(input_shards=1)
    hung = run.start(SHARD_FORK_SERVER=fork_server, **QUICK_HALT)
    warmed_up(run)
    assert hung.process is not None
    started_by_it = psutil.Process(hung.process.pid).children(recursive=True)
    stopped = shard_processes(hung)
    assert stopped, run.tails()
    for process in stopped:  # stuck where no deadline reaches (a frozen process, native code that never returns)
        process.suspend()
    load = run.load(300, rate=1000, start_ride_id=1001)

    assert wait_for(lambda: not hung.running(), timeout=120), run.tails()
    assert hung.process.returncode == 1
    left = [p for p in started_by_it if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"processes outlived the halted daemon: {[p.cmdline() for p in left]}"
    assert "Timedout to get status message for processRecords" in hung.log_path.read_text()

    run.start()
    ledger = run.wait_until_accounted(WARM_UP + load.result().records_sent)
    run.record(ledger)
    assert ledger.complete, ledger.as_dict()
    assert ledger.counts["missing"] == 0
