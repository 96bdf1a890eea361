"""The pod at AWS's write limit: what each process spends on rides that come the way a shard at 1,000 records/s
brings them in production: one GetRecords a second per shard (``KCL_IDLE_TIME_BETWEEN_READS_MS``'s default) of up
to 1,000 records (``KCL_MAX_RECORDS``'s default), the daemon's JVM with its production options.

The emulator cannot take 1,000 records/s per shard on this machine, so the rides wait on the input stream as a
backlog, put before the pod starts: the pod reads them in full batches at whatever pace the emulator serves them,
and what each process spends on a batch is what the same batch costs at the limit. The steps: put ``limit_backlog``
rides on fresh streams; start the pod with the fork server and production settings; let the first ``limit_warmup``
rides through unmeasured (the JVM compiles its hot code); measure the pod's CPU by process until the last
prediction is out, and the batches' sizes from the pod's own metrics; then an idle window with the same settings
(the leases held, every shard polled once a second, no rides), long enough for the JVM's late compilations to be
a small part of it. :func:`~consumer.tools.bench.pod_cpu.write_limit_summary` derives the shards per core."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from consumer.runtime.settings import Settings
from consumer.tools.bench.config import BenchConfig, say
from consumer.tools.bench.model import BenchModel
from consumer.tools.bench.pod import BenchPod
from consumer.tools.bench.pod_cpu import PodCpu, write_limit_summary
from consumer.tools.bench.rides import Rides

__all__ = ["write_limit_run"]

_BATCHES = "ride_consumer_batch_size_records"


def _production_settings() -> dict[str, str]:
    """The settings' own defaults for what shapes the daemon's batches and its JVM (the harness tunes them for
    tests), and no extra daemon properties."""
    fields = Settings.model_fields
    return {
        "SHARD_FORK_SERVER": "true",
        "KCL_IDLE_TIME_BETWEEN_READS_MS": str(fields["kcl_idle_time_between_reads_ms"].default),
        "KCL_MAX_RECORDS": str(fields["kcl_max_records"].default),
        "KCL_JAVA_OPTS": str(fields["kcl_java_opts"].default),
        "KCL_EXTRA_PROPERTIES": "{}",
    }


def _batches(metrics_url: str | None) -> tuple[float, float]:
    """The batches the pod's processors have handled so far and their records, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    if metrics_url is None:
        raise RuntimeError("the pod has not logged its metrics server's address")
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=10) as response:  # loopback, the pod's own
        text = response.read().decode()
    count = records = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{_BATCHES}_count":
                count += sample.value
            elif sample.name == f"{_BATCHES}_sum":
                records += sample.value
    return count, records


def write_limit_run(config: BenchConfig, stack: Any, model: BenchModel, rides: Rides) -> dict[str, Any]:
    from consumer.tools.harness import wait_for

    settings = _production_settings()
    shards = config.daemon_shards
    pod = BenchPod(stack, model, config.work_dir, purpose="limit", shards=shards, settings=settings)
    say(f"write limit: putting a backlog of {config.limit_backlog:,} rides on {shards} shards")
    pod.put(rides.cycle(config.limit_backlog, start_id=1))
    with pod:
        say(f"write limit: the pod reads it in batches of up to {settings['KCL_MAX_RECORDS']}; warming up")
        pod.wait_out(config.limit_warmup, "the write limit's warm-up", timeout=600)
        url = pod.consumer.metrics_url()
        batches_before, records_before = _batches(url)
        cpu = PodCpu(pod.pid)
        out_before = len(pod.predictions)
        pod.wait_out(config.limit_backlog, "the write limit's backlog", timeout=900)
        measured = len(pod.predictions) - out_before
        # A batch's metrics are counted once it is checkpointed, just after its predictions are out.
        wait_for(lambda: _batches(url)[1] - records_before >= measured, timeout=30, interval=0.2)
        window = cpu.window(rides=measured)
        batches_after, records_after = _batches(url)
        say(f"write limit: idle for {config.limit_idle_seconds:g} s")
        idle = PodCpu(pod.pid)
        time.sleep(config.limit_idle_seconds)
        idle_window = idle.window(rides=0)
    batches = batches_after - batches_before
    return {
        "settings": settings,
        "backlog": config.limit_backlog,
        "warmup_rides": config.limit_warmup,
        "batches": int(batches),
        "mean_batch_records": round((records_after - records_before) / batches, 1) if batches else None,
        **write_limit_summary(shards, idle_window, window),
    }
