"""The pod at AWS's write limit: what each process spends on rides that come the way a shard at 1,000 records/s
brings them in production: one GetRecords a second per shard (``KCL_IDLE_TIME_BETWEEN_READS_MS``'s default) of up
to 1,000 records (``KCL_MAX_RECORDS``'s default), the daemon's JVM with its production options.

The emulator cannot take 1,000 records/s per shard on this machine, nor serve and take them back at once, so the
rides wait on the input stream as a backlog, put before the pod starts, and the pod discards its predictions
(``BENCH_DISCARD_OUTPUT``): it reads the backlog in full batches at about the limit's pace, and what each process
spends on a batch is what the same batch costs at the limit. What writing the predictions costs comes from the
processor section (:func:`~consumer.tools.bench.pod_cpu.put_cost`, batches of 1,000 too). The steps: put
``limit_backlog`` rides on fresh streams; start the pod; let the first ``limit_warmup`` rides through unmeasured
(the JVM compiles its hot code); measure the pod's CPU by process until its metrics count the whole backlog; then
an idle window with the same settings (the leases held, every shard polled once a second, no rides), and what one
read of its /metrics costs the launcher. The progress is read from the pod's metrics folder by the benchmark itself,
never through the launcher's /metrics inside a window: Prometheus reads it every ``SCRAPE_INTERVAL_SECONDS``, not at
the benchmark's pace, so a scrape is charged to the pod's fixed cost at that interval. Then a second
pod with ``limit_more_shards`` shards leased and no rides, idle as long: the two idle windows split the daemon's idle
cost into what does not grow with shards and what each one adds. The JVM is still compiling in the windows: its
compiler threads are counted apart
(:class:`~consumer.tools.bench.pod_cpu.PodCpu`). :func:`~consumer.tools.bench.per_core.write_limit_summary` derives the
shards per core."""

from __future__ import annotations

import time
from typing import Any

from consumer.runtime.metricsfolder import MetricsFolder
from consumer.runtime.settings import Settings
from consumer.tools.bench.accounting import pod_processes
from consumer.tools.bench.config import BenchConfig, say
from consumer.tools.bench.model import BenchModel
from consumer.tools.bench.per_core import write_limit_summary
from consumer.tools.bench.pod import BenchPod
from consumer.tools.bench.pod_cpu import PodCpu
from consumer.tools.bench.rides import Rides

__all__ = ["write_limit_run"]

_BATCHES = "ride_consumer_batch_size_records"

#: How often Prometheus reads a pod's /metrics in production: the PodMonitor's interval
#: (k8s/monitoring/podmonitor.yaml; tests/static/test_manifests.py holds the two equal).
SCRAPE_INTERVAL_SECONDS = 30.0

#: Reads of /metrics timed for the cost of one.
_SCRAPES = 20


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
        "BENCH_DISCARD_OUTPUT": "true",
    }


def _batches(folder: MetricsFolder) -> tuple[float, float]:
    """The batches the pod's processors have handled so far and their records, read from its metrics folder by
    this process (the launcher does nothing for it)."""
    count = records = 0.0
    for metric in folder.collect():
        for sample in metric.samples:
            if sample.name == f"{_BATCHES}_count":
                count += sample.value
            elif sample.name == f"{_BATCHES}_sum":
                records += sample.value
    return count, records


def _scrape_cost(pod: BenchPod, url: str) -> dict[str, Any]:
    """What one read of the pod's /metrics costs it (the launcher serves it), ms of CPU, from ``_SCRAPES`` reads."""
    from consumer.tools.harness import scrape

    cpu = PodCpu(pod.pid)
    for _ in range(_SCRAPES):
        scrape(url)
    window = cpu.window(rides=0)
    ms = 1000 * sum(window["cpu_seconds"].values()) / _SCRAPES
    return {"scrapes": _SCRAPES, "ms_per_scrape": round(ms, 2), "interval_seconds": SCRAPE_INTERVAL_SECONDS}


def _idle_pod(config: BenchConfig, model: BenchModel, shards: int, settings: dict[str, str]) -> dict[str, Any]:
    """A pod's idle window with ``shards`` leased and no rides ever put: once a worker runs for every shard and
    ``limit_settle_seconds`` more have passed (the start's own work done), ``limit_idle_seconds`` long."""
    from consumer.tools.harness import wait_for

    with BenchPod(model, config.work_dir, purpose="idle", shards=shards, settings=settings) as pod:
        pod.start()
        say(f"write limit: a second pod, {shards} shards leased, no rides")

        def leased() -> bool:
            if not pod.consumer.running():
                raise RuntimeError(f"the idle pod exited:\n{pod.consumer.tail()}")
            return len(pod_processes(pod.pid)["workers"]) >= shards

        if not wait_for(leased, timeout=300, interval=1.0):
            raise RuntimeError(
                f"the idle pod did not start a worker for each of its {shards} shards:\n{pod.consumer.tail()}"
            )
        time.sleep(config.limit_settle_seconds)
        say(f"write limit: idle for {config.limit_idle_seconds:g} s with {shards} shards")
        idle = PodCpu(pod.pid)
        time.sleep(config.limit_idle_seconds)
        return idle.window(rides=0)


def write_limit_run(config: BenchConfig, model: BenchModel, rides: Rides, put_ms_per_1000: float) -> dict[str, Any]:
    """The pod on a backlog with the production settings; the window's rides are the records of the batches the pod
    finished in it (its own metrics) less one batch per shard: those in flight when it opened, part of whose CPU was
    spent before. So the cost per ride errs high, and the shards per core low."""
    from consumer.tools.harness import wait_for

    settings = _production_settings()
    shards = config.limit_shards
    with BenchPod(model, config.work_dir, purpose="limit", shards=shards, settings=settings) as pod:
        say(f"write limit: putting a backlog of {config.limit_backlog:,} rides on {shards} shards")
        pod.put(rides.cycle(config.limit_backlog, start_id=1))
        pod.start()
        say(f"write limit: the pod reads it in batches of up to {settings['KCL_MAX_RECORDS']}; warming up")
        url = wait_for(pod.consumer.metrics_url, timeout=120)
        # Progress from the pod's metrics folder, read here: a reader of the predictions would load the emulator,
        # and each read of /metrics would cost the launcher CPU inside the window.
        folder = MetricsFolder(pod.metrics_dir, compact=False)
        if not wait_for(lambda: _batches(folder)[1] >= config.limit_warmup, timeout=600, interval=0.2):
            raise RuntimeError(f"the write limit's warm-up did not end:\n{pod.consumer.tail()}")
        cpu = PodCpu(pod.pid)
        batches_before, records_before = _batches(folder)
        if not wait_for(lambda: _batches(folder)[1] >= config.limit_backlog, timeout=900, interval=0.5):
            raise RuntimeError(f"the pod's metrics do not count the whole backlog:\n{pod.consumer.tail()}")
        batches_after, records_after = _batches(folder)
        batches = batches_after - batches_before
        if batches < 3 * shards:
            raise RuntimeError(
                f"the write limit's window held {batches:.0f} batches, too few to count one per shard out: the pod "
                f"drained the backlog faster than it was watched; raise limit_backlog ({config.limit_backlog:,})"
            )
        mean_batch = (records_after - records_before) / batches
        window = cpu.window(rides=int(records_after - records_before - shards * mean_batch))
        say(f"write limit: idle for {config.limit_idle_seconds:g} s")
        idle = PodCpu(pod.pid)
        time.sleep(config.limit_idle_seconds)
        idle_window = idle.window(rides=0)
        scrape = _scrape_cost(pod, url)
    more_idle = _idle_pod(config, model, config.limit_more_shards, settings)
    return {
        "settings": settings,
        "backlog": config.limit_backlog,
        "warmup_rides": int(records_before),
        "batches": int(batches),
        "batch_records": int(records_after - records_before),
        "mean_batch_records": round(mean_batch, 1),
        **write_limit_summary(
            shards,
            idle_window,
            window,
            put_ms_per_1000,
            more_shards_idle=(config.limit_more_shards, more_idle),
            scrape=scrape,
        ),
    }
