"""The **daemon** section: ``python -m consumer run`` with the real KCL daemon (polling every 250 ms), with the fork
server and without. Latency quantiles from a ride's arrival on the input stream to its prediction's arrival on the
output stream (both stamped by the emulator), each shard's steps from its lease to its first prediction written,
the CPU the emulator and the consumer use meanwhile, and the memory of every process of the pod.

The phases: a warm-up (not measured), then the rates of ``latency_rates`` and ``ceiling_rates`` from low to high (a
ceiling rate only while every rate before it was sustained), then an idle window; the pod's CPU by process in each
(:mod:`~consumer.tools.bench.pod_cpu`). Then, with the fork server, the pod at the write limit's batches
(:mod:`~consumer.tools.bench.limit`)."""

from __future__ import annotations

import threading
import time
from typing import Any

from consumer.tools.bench import kcl_log
from consumer.tools.bench.accounting import CpuShare, per_shard, pod_memory
from consumer.tools.bench.config import BenchConfig, say
from consumer.tools.bench.limit import write_limit_run
from consumer.tools.bench.model import BenchModel
from consumer.tools.bench.pod import BenchPod
from consumer.tools.bench.pod_cpu import PodCpu, pod_cpu_summary, put_cost, sustained
from consumer.tools.bench.rides import Rides
from consumer.tools.bench.stats import percentiles, quantiles

__all__ = ["daemon_section"]

#: Ride ids of latency phase n start at n * _PHASE_IDS (the preloaded rides are below).
_PHASE_IDS = 1_000_000


class _Producer:
    """Puts rides on the input stream at a steady rate in a thread (PutRecords every 100 ms)."""

    def __init__(self, client: Any, stream: str, payloads: list[tuple[bytes, str]], rate: int) -> None:
        self._client, self._stream, self._payloads, self._rate = client, stream, payloads, rate
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> _Producer:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        from consumer.pipeline.sink import Entry, KinesisSink

        sink = KinesisSink(self._client, self._stream, backoff_first_seconds=0.05, backoff_max_seconds=1)
        per_tick = max(1, self._rate // 10)
        next_tick = time.monotonic()
        for i in range(0, len(self._payloads), per_tick):
            sink.put([Entry(data, key) for data, key in self._payloads[i : i + per_tick]])
            self.sent += len(self._payloads[i : i + per_tick])
            next_tick += 0.1
            time.sleep(max(0.0, next_tick - time.monotonic()))


def _phase_rates(config: BenchConfig) -> list[int]:
    """Every rate, low to high: the emulator slows as its streams fill, so a low rate measured after a high one
    would be measured on a slower emulator."""
    return sorted({*config.latency_rates, *config.ceiling_rates})


def _daemon_run(config: BenchConfig, model: BenchModel, rides: Rides, *, fork_server: bool) -> dict[str, Any]:
    from consumer.tools.tail import read_all

    phase_rates = _phase_rates(config)
    mode = "fork server" if fork_server else "plain processes"
    pod = BenchPod(
        model,
        config.work_dir,
        purpose="bench",
        shards=config.daemon_shards,
        settings={"SHARD_FORK_SERVER": "true" if fork_server else "false"},
    )
    preload = rides.cycle(50 * config.daemon_shards, start_id=1)
    with pod:
        pod.put(preload)
        say(f"daemon ({mode}, {config.daemon_shards} shards): waiting for the first leases (~30 s)")
        pod.start()
        pod.wait_out(len(preload), "the preloaded rides")
        say(f"daemon ({mode}): warming up at {config.latency_rates[0]} rides/s for {config.warmup_seconds:g} s")
        warmup = rides.cycle(int(config.latency_rates[0] * config.warmup_seconds), start_id=len(preload) + 1)
        _Producer(pod.client, pod.input, warmup, config.latency_rates[0]).start().join()
        expected = len(preload) + len(warmup)
        pod.wait_out(expected, "the warm-up's rides")
        memory: dict[str, Any] = {}
        cpu_share: dict[str, dict[str, float]] = {}
        windows: dict[int, dict[str, Any]] = {}
        phases: list[dict[str, Any]] = []
        for phase, rate in enumerate(phase_rates, start=1):
            if rate not in config.latency_rates and not all(row["sustained"] for row in phases):
                continue  # past the ceiling: only the latency rates still run
            say(f"daemon ({mode}): {rate} rides/s for {config.latency_seconds:g} s")
            count = int(rate * config.latency_seconds)
            producer = _Producer(pod.client, pod.input, rides.cycle(count, start_id=phase * _PHASE_IDS), rate)
            busy = CpuShare({"kinesis-local": pod.emulator_pid, "consumer": pod.pid})
            cpu = PodCpu(pod.pid)
            phase_started = time.monotonic()
            producer.start()
            time.sleep(config.latency_seconds / 2)
            if rate == max(config.latency_rates):
                memory = pod_memory(pod.pid)
            producer.join()
            put_seconds = time.monotonic() - phase_started
            if rate in config.latency_rates:
                cpu_share[str(rate)] = busy.shares()
            expected += count
            pod.wait_out(expected, f"{rate} rides/s")
            windows[rate] = cpu.window(rides=count)
            drain_seconds = time.monotonic() - phase_started - put_seconds
            put_rate = count / put_seconds
            phases.append(
                {
                    "rate": rate,
                    "put_rate": round(put_rate, 1),
                    "drain_seconds": round(drain_seconds, 2),
                    "sustained": sustained(rate, put_rate, drain_seconds),
                }
            )
        say(f"daemon ({mode}): idle for {config.idle_seconds:g} s (the pod's CPU by process)")
        idle = PodCpu(pod.pid)
        time.sleep(config.idle_seconds)
        idle_window = idle.window(rides=0)
        pod.consumer.stop(timeout=60)
        put = read_all(pod.client, pod.input, expect=expected, timeout=120)
    inputs = {record.sequence_number: record for record in put}
    latencies: dict[int, list[float]] = {rate: [] for rate in phase_rates}
    first: dict[str, float] = {}
    for item in pod.predictions:
        shard, sequence, _ = item.event["event_id"].split(":")
        arrived = item.arrival.timestamp()
        first[shard] = min(first.get(shard, arrived), arrived)
        phase = item.event["prediction"]["ride_id"] // _PHASE_IDS
        if phase:
            rate = phase_rates[phase - 1]
            latencies[rate].append(1000 * (arrived - inputs[sequence].arrival.timestamp()))
    for row in phases:
        row["latency_ms"] = quantiles(latencies[row["rate"]])
    log = pod.work / "consumer.log"
    initialized = {e["shard_id"]: kcl_log.seconds(e["timestamp"]) for e in kcl_log.log_events(log, "shard_initialized")}
    to_first = {shard: round(first[shard] - at, 3) for shard, at in initialized.items() if shard in first}
    leased = kcl_log.daemon_times(log, kcl_log.LEASE_TAKEN)
    started = kcl_log.daemon_times(log, kcl_log.INITIALIZE_SENT)
    return {
        "fork_server": fork_server,
        "shards": config.daemon_shards,
        "idle_time_between_reads_ms": 250,
        "latency_ms": {str(rate): quantiles(latencies[rate]) for rate in config.latency_rates},
        # Every percentile (0 to 100) of each latency phase: the latency chart's curves.
        "latency_percentiles_ms": {str(rate): percentiles(latencies[rate]) for rate in config.latency_rates},
        "cpu_cores_busy_while_producing": cpu_share,
        "initialize_to_first_prediction_seconds": to_first,
        "lease_to_initialize_seconds": {
            s: round(initialized[s] - at, 3) for s, at in leased.items() if s in initialized
        },
        "lease_to_first_prediction_seconds": {s: round(first[s] - at, 3) for s, at in leased.items() if s in first},
        # The daemon's own steps, from its log: the shard consumer is created on the scheduler's next loop after
        # the lease, and initialize (the record processor's start) runs on the loop after that.
        "lease_to_shard_consumer_seconds": kcl_log.after(leased, kcl_log.daemon_times(log, kcl_log.CONSUMER_CREATED)),
        "lease_to_initialize_sent_seconds": kcl_log.after(leased, started),
        "initialize_sent_to_initialized_seconds": kcl_log.after(started, initialized),
        "memory": memory,
        "per_shard": per_shard(memory),
        "pod_cpu": pod_cpu_summary(config.daemon_shards, idle_window, windows, phases),
    }


def daemon_section(config: BenchConfig, model: BenchModel, rides: Rides, processor: dict[str, Any]) -> dict[str, Any]:
    """Each mode's run; with the fork server, the write-limit run too, charged the put's cost the processor section
    measured."""
    runs = {
        ("fork_server" if mode else "plain_processes"): _daemon_run(config, model, rides, fork_server=mode)
        for mode in config.daemon_modes
    }
    if "fork_server" in runs:
        runs["fork_server"]["write_limit"] = write_limit_run(config, model, rides, put_cost(processor))
    return runs
