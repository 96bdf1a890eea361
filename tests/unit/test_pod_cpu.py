"""The benchmark's shards per core (docs/performance.md states the formula): the pod's fixed idle cost comes off
the core once, the rest of the idle cost is shared by the leased shards, and each shard at the write limit adds
its rides' cost, for a warmed JVM (its JIT compiler threads' CPU apart) and as measured; a rate counts as sustained
only if the producer kept it and the pod kept up."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from consumer.tools.bench.accounting import jit_threads_cpu_seconds
from consumer.tools.bench.per_core import daemon_idle_split, shard_cost_by_role, shards_per_core, write_limit_summary
from consumer.tools.bench.pod_cpu import SUSTAINED_DRAIN_SECONDS, pod_cpu_summary, put_cost, rate_label, sustained

#: ms of CPU per second while idle with 3 shards leased, and ms per 1,000 rides above idle, by role.
IDLE = {"launcher": 12.0, "fork_server": 8.0, "daemon": 45.0, "record_processors": 3.0, "workers": 12.0}
ABOVE_IDLE = {"launcher": 1.0, "fork_server": 0.0, "daemon": 19.0, "record_processors": 5.0, "workers": 25.0}


def test_one_core_keeps_up_with_what_is_left_after_the_fixed_idle_cost_divided_by_a_shards_cost():
    figures = shards_per_core(IDLE, {**ABOVE_IDLE, "pod": 50.0}, shards=3)

    # (1000 - (12 + 8)) / ((45 + 3 + 12) / 3 + 50 * 1000 / 1000) = 980 / 70
    assert figures["shards_per_core"] == 14.0
    assert figures["shard_ms_per_second"] == 70.0
    # The daemon: 45 / 3 idle plus 19 per 1,000 rides at 1,000 rides/s, of 70.
    assert figures["daemon_share_of_a_shard"] == pytest.approx(34 / 70, abs=1e-3)


def test_more_shards_leased_for_the_same_idle_cost_make_each_shard_cheaper():
    few = shards_per_core(IDLE, {**ABOVE_IDLE, "pod": 50.0}, shards=3)
    many = shards_per_core(IDLE, {**ABOVE_IDLE, "pod": 50.0}, shards=6)

    assert many["shard_idle_ms_per_second"] == few["shard_idle_ms_per_second"] / 2
    assert many["shards_per_core"] > few["shards_per_core"]


@pytest.mark.parametrize(
    ("put_rate", "drain_seconds", "kept"),
    [
        (1_000.0, 1.0, True),
        (960.0, SUSTAINED_DRAIN_SECONDS, True),
        (900.0, 1.0, False),  # the producer (the emulator's answers) fell behind the rate
        (1_000.0, SUSTAINED_DRAIN_SECONDS + 0.1, False),  # the pod fell behind: rides still coming out
    ],
)
def test_a_rate_is_sustained_only_if_it_was_put_and_its_rides_came_out_soon_after(put_rate, drain_seconds, kept):
    assert sustained(1_000, put_rate, drain_seconds) is kept


def _window(rides_per_second: float, cpu_per_second: dict[str, float], seconds: float = 20.0) -> dict[str, object]:
    roles = ("launcher", "daemon", "fork_server", "record_processors", "workers")
    return {
        "seconds": seconds,
        "rides": int(rides_per_second * seconds),
        "processes": dict.fromkeys(roles, 1),
        "cpu_seconds": {role: cpu_per_second.get(role, 0.0) * seconds for role in roles},
    }


def test_the_write_limit_run_charges_each_shard_its_idle_share_and_its_rides_above_idle():
    # Idle with 4 shards: the daemon 40 ms/s, the launcher 4. The backlog: 16,000 rides in 80 s, on top of idle the
    # daemon 20 ms and the workers 30 ms per 1,000 rides.
    idle = _window(0, {"launcher": 0.004, "daemon": 0.040})
    backlog = {
        "seconds": 80.0,
        "rides": 16_000,
        "processes": dict.fromkeys(("launcher", "daemon", "fork_server", "record_processors", "workers"), 1),
        "cpu_seconds": {
            "launcher": 0.004 * 80,
            "daemon": 0.040 * 80 + 0.020 * 16,
            "fork_server": 0.0,
            "record_processors": 0.0,
            "workers": 0.030 * 16,
        },
    }

    summary = write_limit_summary(4, idle, backlog, put_ms_per_1000=10.0)

    assert summary["window"]["ms_per_1000_rides_above_idle"]["pod"] == pytest.approx(50, abs=0.01)
    # The put's 10 ms per 1,000 rides goes on the workers: (1000 - 4) / (40 / 4 + 60 * 1000 / 1000) = 996 / 70,
    # and the daemon's share is (10 + 20) / 70.
    assert summary["ms_per_1000_rides_above_idle_with_put"]["workers"] == pytest.approx(40, abs=0.01)
    assert summary["shards_per_core"]["shards_per_core"] == pytest.approx(996 / 70, abs=0.05)
    assert summary["shards_per_core"]["daemon_share_of_a_shard"] == pytest.approx(30 / 70, abs=1e-3)


def test_the_puts_cost_is_what_the_emulator_sink_adds_to_the_null_sink_per_cpu_second():
    processor = {"onnx_emulator": {"rides_per_cpu_second": 25_000}, "onnx_null_sink": {"rides_per_cpu_second": 40_000}}

    # 1,000 rides: 40 ms with the put, 25 ms without.
    assert put_cost(processor) == pytest.approx(15.0)


def test_the_highest_rate_sustained_is_the_highest_kept_even_if_a_higher_latency_rate_ran_after():
    windows = {rate: _window(rate, {"daemon": 0.05}) for rate in (100, 200, 500)}
    phases = [
        {"rate": 100, "put_rate": 100, "drain_seconds": 0.5, "sustained": True},
        {"rate": 200, "put_rate": 199, "drain_seconds": 0.6, "sustained": True},
        {"rate": 500, "put_rate": 230, "drain_seconds": 4.0, "sustained": False},
    ]

    summary = pod_cpu_summary(4, _window(0, {"daemon": 0.03}), windows, phases)

    assert summary["highest_rate_sustained"] == 200
    # Above idle at 100 rides/s: the daemon's 50 ms/s less its idle 30 ms/s, over 100 rides/s = 200 ms per 1,000.
    assert summary["rates"]["100"]["ms_per_1000_rides_above_idle"]["daemon"] == pytest.approx(200, abs=0.01)


def test_a_latency_figure_is_labelled_with_the_rate_actually_put_when_the_producer_fell_short():
    run = {
        "pod_cpu": {
            "phases": [
                {"rate": 100, "put_rate": 99.6, "drain_seconds": 0.4, "sustained": True},
                {"rate": 500, "put_rate": 212.4, "drain_seconds": 9.0, "sustained": False},
            ]
        }
    }

    assert rate_label(run, "100") == "100 rides/s"
    assert rate_label(run, "500") == "500 rides/s asked, 212 put"


def test_a_warmed_jvm_is_charged_without_its_jit_compilation_and_the_measured_figure_with_it():
    # Idle with 2 shards: the daemon 20 ms/s and its JIT compiler threads 10 more. The backlog: 20,000 rides in
    # 10 s, on top of idle the daemon 20 ms, the JIT 30 ms and the workers 30 ms per 1,000 rides.
    roles = ("launcher", "daemon", "jit", "fork_server", "record_processors", "workers")
    idle = {
        "seconds": 10.0,
        "rides": 0,
        "processes": {},
        "cpu_seconds": {**dict.fromkeys(roles, 0.0), "daemon": 0.2, "jit": 0.1},
    }
    backlog = {
        "seconds": 10.0,
        "rides": 20_000,
        "processes": {},
        "cpu_seconds": {**dict.fromkeys(roles, 0.0), "daemon": 0.2 + 0.4, "jit": 0.1 + 0.6, "workers": 0.6},
    }

    summary = write_limit_summary(2, idle, backlog, put_ms_per_1000=0.0)

    # Warmed: 1000 / (20 / 2 + (20 + 30) * 1000 / 1000) = 1000 / 60; the daemon (10 + 20) of 60.
    assert summary["shards_per_core"]["shards_per_core"] == pytest.approx(1000 / 60, abs=0.05)
    assert summary["shards_per_core"]["daemon_share_of_a_shard"] == pytest.approx(30 / 60, abs=1e-3)
    # As measured: 1000 / ((20 + 10) / 2 + (20 + 30 + 30) * 1000 / 1000) = 1000 / 95; the daemon (15 + 50) of 95.
    assert summary["shards_per_core_jit_included"]["shards_per_core"] == pytest.approx(1000 / 95, abs=0.05)
    assert summary["shards_per_core_jit_included"]["daemon_share_of_a_shard"] == pytest.approx(65 / 95, abs=1e-3)


class _Thread(NamedTuple):  # psutil.Process.threads()' rows
    id: int
    user_time: float
    system_time: float


class _Jvm:
    """What psutil says of a process: its pid and each thread's id, user and system CPU-seconds."""

    pid = 4242

    def __init__(self, threads: list[tuple[int, float, float]]) -> None:
        self._threads = threads

    def threads(self) -> list[_Thread]:
        return [_Thread(tid, user, system) for tid, user, system in self._threads]


def _task(proc: Path, tid: int, name: str) -> None:
    task = proc / "4242" / "task" / str(tid)
    task.mkdir(parents=True)
    (task / "comm").write_text(f"{name}\n")


def test_the_jit_compiler_threads_cpu_is_read_by_thread_and_other_threads_and_ended_ones_are_left_out(tmp_path):
    _task(tmp_path, 11, "C2 CompilerThre")
    _task(tmp_path, 12, "C1 CompilerThre")
    _task(tmp_path, 13, "prefetch-cache-")

    # Thread 14 ended between the list of threads and the read of its name.
    jvm = _Jvm([(11, 3.0, 1.0), (12, 1.0, 0.0), (13, 50.0, 0.0), (14, 7.0, 0.0)])
    threads = jit_threads_cpu_seconds(jvm, proc=tmp_path)  # type: ignore[arg-type]

    assert threads == {11: 4.0, 12: 1.0}


def test_a_second_idle_pod_with_more_shards_moves_the_daemons_fixed_idle_cost_out_of_each_shard():
    # The daemon idle (JIT apart): 20 ms/s with 2 shards, 28 with 6, so 2 per shard and 16 whatever the shards. The
    # backlog: on top of idle the daemon 20 ms and the workers 30 ms per 1,000 rides, the put 10 more.
    idle = _window(0, {"launcher": 0.004, "daemon": 0.020})
    more = _window(0, {"launcher": 0.004, "daemon": 0.028})
    backlog = _window(1000, {"launcher": 0.004, "daemon": 0.020 + 0.020, "workers": 0.030})

    alone = write_limit_summary(2, idle, backlog, put_ms_per_1000=10.0)
    split = write_limit_summary(2, idle, backlog, put_ms_per_1000=10.0, more_shards_idle=(6, more))

    assert split["daemon_idle_split"]["fixed_ms_per_second"] == pytest.approx(16.0)
    assert split["daemon_idle_split"]["per_shard_ms_per_second"] == pytest.approx(2.0)
    # One window: (1000 - 4) / (20 / 2 + 60). Split: (1000 - 4 - 16) / (2 + 60).
    assert alone["shards_per_core"]["shards_per_core"] == pytest.approx(996 / 70, abs=0.05)
    assert split["shards_per_core"]["shards_per_core"] == pytest.approx(980 / 62, abs=0.05)
    # The daemon's share of the core at N shards: its fixed 16 plus N times its 2 + 20 per shard.
    n = 980 / 62
    assert split["shards_per_core"]["daemon_share_of_the_core"] == pytest.approx((16 + n * 22) / 1000, abs=1e-3)


@pytest.mark.parametrize(
    ("more_daemon", "fixed", "per_shard"),
    [
        (0.010, 20.0, 0.0),  # fewer ms/s with more shards: noise, so all of it fixed
        (0.080, 0.0, 10.0),  # more than in proportion: all of it per shard, as one window alone charges it
    ],
)
def test_a_noisy_pair_of_idle_windows_never_makes_either_part_of_the_daemons_idle_cost_negative(
    more_daemon, fixed, per_shard
):
    split = daemon_idle_split(
        (2, {"daemon": 20.0}),
        (6, {"daemon": 1000 * more_daemon}),
    )

    assert split["fixed_ms_per_second"] == pytest.approx(fixed)
    assert split["per_shard_ms_per_second"] == pytest.approx(per_shard)


def test_two_idle_windows_with_the_same_shard_count_cannot_split_anything():
    with pytest.raises(ValueError, match="same shard count"):
        daemon_idle_split((2, {"daemon": 20.0}), (2, {"daemon": 22.0}))


def test_what_a_shard_is_charged_by_role_adds_up_to_its_cost_with_the_fixed_roles_left_to_f():
    idle = _window(0, {"launcher": 0.004, "fork_server": 0.002, "daemon": 0.020, "workers": 0.001})
    backlog = _window(1000, {"launcher": 0.005, "fork_server": 0.002, "daemon": 0.040, "workers": 0.031})
    more = _window(0, {"launcher": 0.004, "daemon": 0.028})
    summary = write_limit_summary(2, idle, backlog, put_ms_per_1000=10.0, more_shards_idle=(6, more))

    idle_share, rides = shard_cost_by_role(
        summary["idle"]["ms_per_second"],
        summary["ms_per_1000_rides_above_idle_with_put"],
        2,
        daemon_fixed_ms_per_second=summary["daemon_idle_split"]["fixed_ms_per_second"],
    )

    assert idle_share["launcher"] == idle_share["fork_server"] == 0.0
    # The daemon's 20 ms/s less its fixed 16, over 2 shards; the workers' 1 over 2.
    assert idle_share["daemon"] == pytest.approx(2.0) and idle_share["workers"] == pytest.approx(0.5)
    assert sum(idle_share.values()) + sum(rides.values()) == pytest.approx(
        summary["shards_per_core_jit_included"]["shard_ms_per_second"], abs=0.01
    )


def test_prometheus_scrapes_are_charged_to_the_pods_fixed_cost_at_their_interval():
    # One read of /metrics costs 6 ms; Prometheus reads every 30 s: 0.2 ms/s more in F, nothing per shard.
    idle = _window(0, {"launcher": 0.004, "daemon": 0.020})
    backlog = _window(1000, {"launcher": 0.004, "daemon": 0.020 + 0.020, "workers": 0.030})
    scrape = {"scrapes": 20, "ms_per_scrape": 6.0, "interval_seconds": 30.0}

    without = write_limit_summary(2, idle, backlog, put_ms_per_1000=10.0)
    scraped = write_limit_summary(2, idle, backlog, put_ms_per_1000=10.0, scrape=scrape)

    assert scraped["scrape"] == scrape
    per_core, before = scraped["shards_per_core"], without["shards_per_core"]
    assert per_core["pod_fixed_ms_per_second"] == pytest.approx(before["pod_fixed_ms_per_second"] + 0.2)
    assert per_core["shard_ms_per_second"] == before["shard_ms_per_second"]
    assert per_core["shards_per_core"] == pytest.approx((1000 - 4.2) / 70, abs=0.05)
    assert scraped["shards_per_core_jit_included"]["pod_fixed_ms_per_second"] == pytest.approx(4.2)
