"""The metrics folder under lease churn: real shard-like processes write their files and end (exit, or are killed);
compaction folds the dead ones' counters and histograms into one file per kind, and no scrape ever sees a total
drop. Files are read back through prometheus_client's MultiProcessCollector, so a change of its file format fails
here."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from consumer.runtime.health import HealthServer, LauncherState
from consumer.runtime.metrics import scrape_registry
from consumer.runtime.metricsfolder import MetricsFolder, compact_dead_processes
from consumer.tools.paths import REPO_ROOT

#: One shard process's life: a lease, one batch of RECORDS records with one dead letter, then an exit, a wait
#: for stdin (a live process) or a wait to be killed.
LIFE = """
import sys
from consumer.pipeline.meter import ShardMetrics
shard, records, end = sys.argv[1], int(sys.argv[2]), sys.argv[3]
meter = ShardMetrics.create().for_shard(shard)
meter.lease_gained()
meter.batch_received(records, 1000)
meter.batch_done(predictions=records - 1, dead_letter_reasons=["not_json"], newest_arrival_millis=1, seconds=0.125)
print("written", flush=True)
if end != "exit":
    sys.stdin.read()
"""

RECEIVED = "ride_consumer_records_received_total"
BATCH_SECONDS_COUNT = "ride_consumer_batch_duration_seconds_count"


class Life:
    """A shard process that has written its metrics; ``end`` is "exit" (it ends at once), "live" or "kill"."""

    def __init__(self, folder: Path, shard: str, records: int, end: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LIFE, shard, str(records), end],
            cwd=REPO_ROOT,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdout.readline() == "written\n"

    def end(self, how: str) -> None:
        if how == "kill":
            self.process.send_signal(signal.SIGKILL)
        else:
            assert self.process.stdin is not None
            self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "metrics"
    MetricsFolder(path).empty()
    return path


@pytest.fixture
def lives() -> Iterator[list[Life]]:
    started: list[Life] = []
    yield started
    for life in started:
        if life.process.poll() is None:
            life.process.kill()
            life.process.wait()


def totals(metrics_folder: MetricsFolder) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in scrape_registry(metrics_folder).collect()
        for sample in family.samples
    }


def shard(shard_id: str, **labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"shard_id": shard_id, **labels}.items()))


def test_compaction_keeps_every_total_and_leaves_the_live_processes_and_one_file_per_kind(folder, lives):
    for index in range(6):  # three exit, three are killed (no exit handler: their live gauges stay behind)
        life = Life(folder, f"shardId-00000000000{index % 2}", 10 + index, "exit" if index % 2 else "kill")
        life.end("exit" if index % 2 else "kill")
    live = Life(folder, "shardId-000000000002", 7, "live")
    lives.append(live)
    before = totals(MetricsFolder(folder, compact=False))

    after = totals(MetricsFolder(folder))

    assert after.keys() == before.keys()
    assert after == pytest.approx(before, rel=1e-12)  # sums of floats (histograms' _sum) added in another order
    assert after[RECEIVED, shard("shardId-000000000000")] == 10 + 12 + 14
    assert after[RECEIVED, shard("shardId-000000000001")] == 11 + 13 + 15
    assert after[RECEIVED, shard("shardId-000000000002")] == 7
    assert after["ride_consumer_dead_letters_total", shard("shardId-000000000000", reason="not_json")] == 3
    assert after[BATCH_SECONDS_COUNT, shard("shardId-000000000001")] == 3
    assert after["ride_consumer_leases_held", shard("shardId-000000000002")] == 1  # the live process's gauge
    names = sorted(path.name for path in folder.iterdir())
    pid = live.process.pid
    assert names == sorted(
        [
            "counter_compacted.db",
            "histogram_compacted.db",
            f"counter_{pid}.db",
            f"histogram_{pid}.db",
            f"gauge_livemax_{pid}.db",
            f"gauge_livesum_{pid}.db",
        ]
    )


def test_a_compaction_adds_to_the_previous_one_and_a_live_process_keeps_its_file(folder, lives):
    metrics = MetricsFolder(folder)
    live = Life(folder, "shardId-000000000000", 5, "live")
    lives.append(live)
    Life(folder, "shardId-000000000000", 20, "exit").end("exit")
    assert totals(metrics)[RECEIVED, shard("shardId-000000000000")] == 25
    Life(folder, "shardId-000000000000", 40, "kill").end("kill")
    assert totals(metrics)[RECEIVED, shard("shardId-000000000000")] == 65
    assert (folder / f"counter_{live.process.pid}.db").exists()

    live.end("exit")

    assert totals(metrics)[RECEIVED, shard("shardId-000000000000")] == 65
    assert sorted(path.name for path in folder.iterdir()) == ["counter_compacted.db", "histogram_compacted.db"]


def test_the_file_of_a_pid_that_runs_is_never_compacted(folder):
    """A file named after a pid that exists (a live process, or a new one given a dead one's pid) stays."""
    mine = MmapedDict(str(folder / f"counter_{os.getpid()}.db"))
    mine.write_value('["c", "c_total", {}, "help"]', 3.0, 0.0)
    mine.close()

    compaction = compact_dead_processes(folder)

    assert compaction.pids == () and compaction.files_removed == 0
    assert sorted(path.name for path in folder.iterdir()) == [f"counter_{os.getpid()}.db"]


def get_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_no_scrape_sees_a_total_drop_while_processes_end_and_scrapes_and_probes_run(folder, lives):
    state = LauncherState(folder)
    server = HealthServer(state, "127.0.0.1", 0).start()
    seen: list[list[float]] = [[], []]  # per scraper: its scrapes are one after the other
    done = threading.Event()
    errors: list[BaseException] = []

    def scrape(scraper: int) -> None:
        try:
            while not done.is_set():
                seen[scraper].append(get_metrics(server.port).get((RECEIVED, shard("shardId-000000000000")), 0.0))
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=30) as response:
                    assert response.status == 200
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    scrapers = [threading.Thread(target=scrape, args=(scraper,)) for scraper in range(2)]
    for thread in scrapers:
        thread.start()
    try:
        previous = Life(folder, "shardId-000000000000", 1, "live")
        for index in range(2, 21):  # two processes alive at a time, each replaced by the next; every 3rd killed
            following = Life(folder, "shardId-000000000000", index, "live")
            previous.end("kill" if index % 3 == 0 else "exit")
            previous = following
        lives.append(previous)
    finally:
        done.set()
        for thread in scrapers:
            thread.join(timeout=60)
        server.stop()

    assert not errors, errors
    for scrapes in seen:
        assert len(scrapes) > 10
        drops = [(index, pair) for index, pair in enumerate(itertools.pairwise(scrapes)) if pair[1] < pair[0]]
        assert not drops, f"{len(scrapes)} scrapes, drops (index, (before, after)): {drops}"
    assert totals(state.metrics)[RECEIVED, shard("shardId-000000000000")] == sum(range(1, 21))


def test_a_file_created_but_not_yet_sized_is_read_as_empty_whether_its_process_runs_or_died(folder):
    """prometheus_client creates a process's file empty and then sizes it: a scrape in between must not fail."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(ended.stdout)
    (folder / f"counter_{os.getpid()}.db").touch()  # a process that runs, creating its file
    (folder / f"histogram_{dead}.db").touch()  # one killed at that instant

    assert totals(MetricsFolder(folder)) == {}
    assert sorted(path.name for path in folder.iterdir()) == [f"counter_{os.getpid()}.db"]


COLLECT = """
import sys
from pathlib import Path
from consumer.runtime.metricsfolder import MetricsFolder
MetricsFolder(Path(sys.argv[1])).collect()
print("collected", flush=True)
"""


def test_a_read_waits_for_another_process_reading_the_same_folder(tmp_path):
    """The web endpoint's workers each serve /metrics from one folder: one compaction at a time across processes,
    or two would add the same dead file to the aggregate."""
    import fcntl

    Life(tmp_path, "shardId-000000000000", 10, "exit").end("exit")
    descriptor = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)  # as another process's read holds it
    reader = subprocess.Popen(
        [sys.executable, "-c", COLLECT, str(tmp_path)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            reader.wait(timeout=3)
        assert list(tmp_path.glob("counter_*.db")) != [tmp_path / "counter_compacted.db"], "compacted under the lock"
    finally:
        os.close(descriptor)
    assert reader.wait(timeout=60) == 0
    assert reader.stdout is not None and reader.stdout.read() == "collected\n"
    assert [path.name for path in tmp_path.glob("counter_*.db")] == ["counter_compacted.db"]
