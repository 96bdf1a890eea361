"""UpdateShardCount 2 -> 4 under steady load: each parent shard is finished (checkpointed at SHARD_END) before its
children are read, and no ride is lost on the way."""

from __future__ import annotations

from consumer.tools.ledger import shard_parents
from tests.faults.conftest import log_events
from tests.faults.test_crashes import WARM_UP, steady_load, warmed_up


def test_resharding_two_to_four_under_load_finishes_parents_before_children(scenario):
    run = scenario(input_shards=2)
    consumer = run.start()
    warmed_up(run)
    load = steady_load(run, rides=2000)
    run.wait_for_outputs(WARM_UP + 150)

    run.kinesis.update_shard_count(StreamName=run.input, TargetShardCount=4, ScalingType="UNIFORM_SCALING")

    ledger = run.wait_until_accounted(WARM_UP + load.result().records_sent, timeout=240)
    run.record(ledger)
    lineage = shard_parents(run.kinesis, run.input)
    parents = {shard for shard, its_parents in lineage.items() if not its_parents}
    children = {shard for shard, its_parents in lineage.items() if its_parents}
    assert (len(parents), len(children)) == (2, 4)
    read_from = {fate.shard_id for fate in ledger.records}
    assert parents <= read_from and children <= read_from  # the load spanned the resharding
    assert ledger.order_violations == ()
    assert ledger.complete, ledger.as_dict()
    assert ledger.counts["missing"] == 0
    ended = {event["shard_id"] for event in log_events(consumer) if event.get("event") == "shard_ended"}
    assert ended == parents
    assert consumer.running(), run.tails()
