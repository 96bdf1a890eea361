"""The shard processes' metrics folder (``PROMETHEUS_MULTIPROC_DIR``) as the launcher reads and keeps it.

Every shard process (one per lease: a lease that moves, a rebalancing or a rolling update starts a new one) writes
its values to files of its own, named by its pid (prometheus-client's multiprocess mode). What a process leaves
when it ends:

- its live gauges (lag, lease, busy): removed, so its lag and lease leave with it (:func:`forget_dead_processes`;
  a process that exits removes its own, one that was killed cannot);
- its counters and histograms: still counts, so they must stay; but a folder that keeps one more file per process
  for ever makes every scrape and every liveness probe slower under lease churn. :func:`compact_dead_processes`
  adds the values of dead processes into one file per kind (``counter_compacted.db``...; same format, read by
  ``MultiProcessCollector`` like any other file) and removes theirs, so the totals a scrape serves are the same
  before and after (counters stay monotonic) and the folder holds the live processes plus one file per kind.

:class:`MetricsFolder` is the one reader: every read (a scrape, a probe) first compacts what died since the last
one, under a lock, so no read sees a half-done compaction (a dead file already added to the aggregate but not yet
removed would count twice; one removed but not yet added would drop). Only the launcher reads the folder, so an
in-process lock is enough. The folder is emptied when the launcher starts (:meth:`MetricsFolder.empty`): a new pod
starts its counters from zero, which Prometheus reads as a counter reset.

Files are read and written with prometheus-client's own ``prometheus_client.mmap_dict.MmapedDict``, which is not
part of its documented API (docs/dependencies.md); tests/integration/test_metrics_compaction.py reads compacted
folders back through ``MultiProcessCollector`` and fails if the format moves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from prometheus_client.core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = ["COMPACTED", "Compaction", "MetricsFolder", "compact_dead_processes", "forget_dead_processes"]

#: The kinds whose values add up across processes, hence across dead ones into one file.
_SUMMED_KINDS = ("counter", "histogram", "summary")
#: The name of a kind's aggregate file, e.g. ``counter_compacted.db``: no pid in it, so no process ever writes it.
COMPACTED = "compacted"
_PROCESS_FILE = re.compile(r"^(counter|histogram|summary)_(\d+)\.db$")
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


@dataclass(frozen=True)
class Compaction:
    """What one compaction did: the dead processes whose files it folded in, and how many files it removed."""

    pids: tuple[int, ...]
    files_removed: int


def forget_dead_processes(directory: Path) -> list[int]:
    """Remove the live-gauge files of processes that no longer exist (a killed shard process cannot do it
    itself); return their pids."""
    dead = sorted(
        {
            int(match.group(1))
            for path in directory.glob("gauge_live*.db")
            if (match := _LIVE_GAUGE_FILE.match(path.name)) and not psutil.pid_exists(int(match.group(1)))
        }
    )
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):  # the process's own exit handler may be removing them too
            mark_process_dead(pid, str(directory))
    return dead


def _dead_process_files(directory: Path) -> dict[str, dict[int, Path]]:
    """Kind -> pid -> file, for the counter/histogram/summary files of processes that no longer exist."""
    files: dict[str, dict[int, Path]] = defaultdict(dict)
    alive: dict[int, bool] = {}
    for path in directory.glob("*.db"):
        match = _PROCESS_FILE.match(path.name)
        if match is None:
            continue
        pid = int(match.group(2))
        if pid not in alive:
            alive[pid] = psutil.pid_exists(pid)
        if not alive[pid]:
            files[match.group(1)][pid] = path
    return files


# prometheus_client.mmap_dict has no annotations.


def _add_values(totals: dict[str, float], path: Path) -> None:
    if path.stat().st_size == 0:
        return  # created, not yet sized: the process died before it wrote anything
    values: Iterable[tuple[str, float, float, int]] = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
    for key, value, _timestamp, _position in values:
        totals[key] += value


def _write_values(path: Path, values: dict[str, float]) -> None:
    """Write ``values`` to a new file at ``path``, atomically (a temporary file renamed over it)."""
    temporary = path.with_name(path.name + ".tmp")  # not *.db: never read as a metrics file
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    mmap = MmapedDict(str(temporary))  # type: ignore[no-untyped-call]
    try:
        for key, value in values.items():
            mmap.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
    finally:
        mmap.close()  # type: ignore[no-untyped-call]
    os.replace(temporary, path)


def compact_dead_processes(directory: Path) -> Compaction:
    """Fold the counter, histogram and summary files of processes that no longer exist into one file per kind,
    and remove them. Not safe against a concurrent reader of ``directory``: :class:`MetricsFolder` holds its lock.

    A process that ends during the compaction is left for the next one. A pid found dead is checked again just
    before its file is folded in, so a new process that was given the same pid meanwhile keeps its file (it would
    have opened it and continued from its values)."""
    pids: set[int] = set()
    removed = 0
    for kind, dead in _dead_process_files(directory).items():
        aggregate = directory / f"{kind}_{COMPACTED}.db"
        totals: dict[str, float] = defaultdict(float)
        if aggregate.exists():
            _add_values(totals, aggregate)
        for path in dead.values():
            _add_values(totals, path)
        still_dead = {pid: path for pid, path in dead.items() if not psutil.pid_exists(pid)}
        if len(still_dead) != len(dead):
            continue  # a pid came back: leave this kind to the next compaction, which will read it afresh
        if totals or aggregate.exists():
            _write_values(aggregate, totals)
        for pid, path in still_dead.items():
            path.unlink()
            pids.add(pid)
            removed += 1
    return Compaction(tuple(sorted(pids)), removed)


class MetricsFolder:
    """The launcher's one way into the metrics folder: every read sweeps the dead processes first (their live
    gauges go; with ``compact``, their counters and histograms are compacted), under one lock.

    ``compact=False`` only for the soak's comparison (``python -m consumer bench --soak``)."""

    def __init__(self, path: Path, *, compact: bool = True) -> None:
        self.path = path
        self.compact = compact
        self._lock = threading.Lock()

    def empty(self) -> None:
        """Create the folder, or remove the files a previous run left in it (they would count twice): only the
        ``*.db`` files prometheus_client writes, in case the folder is shared with something else."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self._locked():
            for path in self.path.glob("*.db*"):
                path.unlink()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This process's threads one at a time, and other processes reading the same folder (the web endpoint's
        workers each serve /metrics) one at a time too: two compactions of one dead file would count it twice."""
        with self._lock:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)  # the folder itself: no file of ours in it
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                yield
            finally:
                os.close(descriptor)  # releases the lock

    def collect(self) -> list[Metric]:
        """Every metric of every shard process, dead ones included, as one scrape serves them."""
        with self._locked():
            self._sweep()
            return list(MultiProcessCollector.merge(self._files("*.db"), accumulate=True))

    def live_gauges(self, mode: str) -> Iterable[Metric]:
        """The gauges of the live processes in multiprocess ``mode`` (``livemax``...), without reading counters
        or histograms: what the liveness probe needs."""
        with self._locked():
            self._sweep()
            return list(MultiProcessCollector.merge(self._files(f"gauge_{mode}_*.db"), accumulate=True))

    def _sweep(self) -> None:
        forget_dead_processes(self.path)
        if self.compact:
            compact_dead_processes(self.path)

    def _files(self, pattern: str) -> list[str]:
        """The files to read: not one a process is creating this instant (a file is created empty, then sized;
        prometheus_client cannot read an empty one), nor one an exiting process has just removed."""
        files = []
        for path in self.path.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size > 0:
                    files.append(str(path))
        return files
