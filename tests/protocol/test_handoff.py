"""The graceful lease handoff through the real record processor, and the upstream amazon_kclpy trap around it.

When a worker shuts down gracefully (the launcher's SIGTERM; with KCL 3 also whenever its leader moves a lease), each
of its processors gets shutdownRequested with a checkpointer, may checkpoint, and then gets leaseLost. A checkpoint
reply must be read by the checkpoint call that asked for it: should one reach KCLProcess's main loop, upstream dies
with "'CheckpointInput' object has no attribute 'action'" (awslabs/amazon-kinesis-client-python issues 232 and 339);
ours stops the shard saying so (consumer/runtime/shard.py, GuardedKCLProcess).
"""

from __future__ import annotations

from tests.protocol.test_multilang import SHARD, answer_checkpoint, initialize, process, record
from tests.support.factories import ride_payload


def test_a_handoff_checkpoints_the_written_batch_the_daemon_had_not_confirmed_then_lets_the_lease_go(start_processor):
    processor = start_processor()
    initialize(processor)
    batch = [record(ride_payload(ride_id), ride_id, str(ride_id)) for ride_id in range(1, 4)]
    process(processor, batch)
    # The lease moved while the batch was being checkpointed: written, not checkpointed.
    answer_checkpoint(processor, error="ShutdownException")
    assert processor.receive() == {"action": "status", "responseFor": "processRecords"}

    processor.send({"action": "shutdownRequested"})
    asked = answer_checkpoint(processor)  # read by the checkpoint call inside shutdownRequested, not the main loop
    assert asked == {"action": "checkpoint", "sequenceNumber": batch[-1]["sequenceNumber"], "subSequenceNumber": 0}
    assert processor.receive() == {"action": "status", "responseFor": "shutdownRequested"}
    processor.send({"action": "leaseLost"})
    assert processor.receive() == {"action": "status", "responseFor": "leaseLost"}
    processor.close()
    assert processor.exit_code() == 0
    assert not any(event.get("event") == "unsolicited_checkpoint_reply" for event in processor.log_events())
    assert "CheckpointInput" not in processor.stderr


def test_a_checkpoint_reply_nobody_asked_for_stops_the_shard_loudly(start_processor):
    processor = start_processor()
    initialize(processor)
    processor.send(
        {"action": "checkpoint", "sequenceNumber": "49000000000000000007", "subSequenceNumber": 0, "error": None}
    )
    assert processor.receive() is None, "no status: the daemon must not take the stray line as answered"
    assert processor.exit_code() == 1
    (event,) = [event for event in processor.log_events() if event.get("event") == "unsolicited_checkpoint_reply"]
    assert event["sequence_number"] == "49000000000000000007"
    assert event["shard_id"] == SHARD
    assert "has no attribute 'action'" not in processor.stderr, "the guard ran before upstream's crash"
