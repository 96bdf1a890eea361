"""The shard process: what record_processor.py runs, once per leased shard, under the MultiLangDaemon.

It wires the pieces (settings, logs, the prepared model, the two sinks) and hands stdin/stdout to amazon_kclpy's
KCLProcess (:class:`GuardedKCLProcess`). The model is the one PREPARED_MODEL_DIR names; when that is the launcher's
pointer (:mod:`consumer.model.current`), the processor takes up the version published last at its next batch
boundary.
stdout carries only the MultiLang protocol; every log line goes to stderr as JSON.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import TextIO

from amazon_kclpy import messages
from amazon_kclpy.kcl import KCLProcess
from prometheus_client.multiprocess import mark_process_dead

from consumer.errors import SettingsError
from consumer.model.current import Follower
from consumer.pipeline.batch import Model
from consumer.pipeline.meter import ShardMetrics
from consumer.pipeline.processor import ModelUpdates, RideProcessor
from consumer.pipeline.sink import KinesisSink, NullSink
from consumer.runtime.aws import put_records_client
from consumer.runtime.logs import configure_logging, get_logger
from consumer.runtime.putrecords import PutRecordsClient
from consumer.runtime.settings import Settings, load_settings

__all__ = ["GuardedKCLProcess", "main", "sink_client"]


class GuardedKCLProcess(KCLProcess):  # type: ignore[misc]  # amazon_kclpy is untyped
    """amazon_kclpy's KCLProcess, stopping the shard loudly when its main loop reads a checkpoint reply.

    A checkpoint reply answers a checkpoint request; ``Checkpointer.checkpoint`` reads it, inside the call the daemon
    dispatched (processRecords, shutdownRequested, shardEnded). One that reaches the main loop instead (a request
    made outside a dispatched call, or a stray line) makes the upstream loop dispatch it to nothing and die with
    "'CheckpointInput' object has no attribute 'action'" (awslabs/amazon-kinesis-client-python issues 232 and 339).
    The record processor never checkpoints outside a dispatched call, so such a line means the protocol is out of
    step: this class logs ``unsolicited_checkpoint_reply`` with what arrived and exits 1 without answering, so the
    daemon replays the shard from its last checkpoint.
    """

    def _handle_a_line(self, line: str) -> None:  # the upstream method, with the guard in front
        action = self.io_handler.load_action(line)
        if isinstance(action, messages.CheckpointInput):
            get_logger().error(
                "unsolicited_checkpoint_reply",
                sequence_number=action.sequence_number,
                error=action.error,
                hint="a checkpoint reply arrived while no checkpoint was asked for; stopping the shard",
            )
            sys.stderr.flush()
            raise SystemExit(1)
        self._perform_action(action)
        self._report_done(action.action)


def sink_client(settings: Settings) -> PutRecordsClient:
    """The sinks' client: PutRecords without botocore's serializer and parser (:mod:`consumer.runtime.putrecords`),
    never retrying on its own, so that the sink's loop is the only one, its budget known and every retry logged."""
    endpoint = settings.aws_endpoint_url_kinesis
    return put_records_client(region=settings.aws_region, endpoint_url=str(endpoint) if endpoint else None)


def _updates(follower: Follower) -> ModelUpdates:
    def changed() -> tuple[Model, str] | None:
        scorer = follower.check()
        return None if scorer is None else (scorer, scorer.info.version)

    return changed


def main(stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    err = stderr or sys.stderr
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"record processor: {exc}", file=err)
        return 2
    configure_logging(settings.log_level, stream=err, component="record_processor")
    if settings.prepared_model_dir is None:
        get_logger().error("no_prepared_model", hint="PREPARED_MODEL_DIR is set by `python -m consumer run`")
        return 2
    follower = Follower(settings.prepared_model_dir)
    scorer = follower.scorer
    client = sink_client(settings)
    # The launcher put PROMETHEUS_MULTIPROC_DIR in our environment, so prometheus_client (imported with the
    # processor) writes every value to a file there. On exit this process's live gauges (lag, lease) go away.
    metrics = ShardMetrics.create()
    atexit.register(mark_process_dead, os.getpid(), str(settings.prometheus_multiproc_dir))

    if settings.bench_discard_output:
        get_logger().warning("output_discarded", reason="BENCH_DISCARD_OUTPUT=true (benchmark against an emulator)")

    def sink(stream_name: str, role: str) -> KinesisSink | NullSink:
        if settings.bench_discard_output:
            return NullSink(stream_name)
        return KinesisSink(
            client,
            stream_name,
            max_attempts=settings.put_max_attempts,
            backoff_max_seconds=settings.put_backoff_max_seconds,
            on_retry=metrics.put_entries_retried.labels(role).inc,
        )

    processor = RideProcessor(
        model=scorer,
        model_version=scorer.info.version,
        predictions=sink(settings.predictions_stream_name, "predictions"),
        dead_letters=sink(settings.dead_letter_stream_name, "dead_letters"),
        input_stream=settings.input_stream_name,
        test_run=settings.test_run,
        max_record_age_seconds=settings.max_record_age_seconds,
        batch_deadline_seconds=settings.batch_deadline_seconds,
        metrics=metrics,
        model_updates=_updates(follower),
    )
    GuardedKCLProcess(processor, input_file=stdin or sys.stdin, output_file=stdout or sys.stdout, error_file=err).run()
    return 0
