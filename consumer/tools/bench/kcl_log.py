"""Reading the consumer's log (JSON lines from the launcher, the shards and the daemon): when each shard reached
each step, from the processors' own events and from the KCL daemon's messages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "CONSUMER_CREATED",
    "INITIALIZE_SENT",
    "LEASE_TAKEN",
    "after",
    "daemon_times",
    "log_events",
    "seconds",
]

#: Lines of the daemon's log that mark a shard's steps; every shard id the match covers takes the line's time. A
#: lease is taken by its worker in KCL 2.x ("Transferred lease ... ownership") and assigned by the leader in KCL 3
#: (the worker's "New leases assigned to worker : W, count : N, leases : [...]").
LEASE_TAKEN = re.compile(
    r"Transferred lease shardId-\d+ ownership"
    r"|New leases assigned to worker : \S+, count : [1-9]\d*, leases : \[[^\]]*\]"
)
CONSUMER_CREATED = re.compile(r"Created new shardConsumer for : ShardInfo\(.*shardId=shardId-\d+")
INITIALIZE_SENT = re.compile(r":shardId-\d+ : Starting Prefetching thread")
_SHARD = re.compile(r"shardId-\d+")


def log_events(path: Path, event: str) -> Iterator[dict[str, Any]]:
    """The JSON log lines of ``path`` whose ``event`` is ``event``."""
    for line in path.read_bytes().splitlines():
        if line.startswith(b"{") and f'"{event}"'.encode() in line:
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if parsed.get("event") == event:
                yield parsed


def daemon_times(path: Path, pattern: re.Pattern[str]) -> dict[str, float]:
    """When the daemon's log first says ``pattern`` of each shard."""
    found: dict[str, float] = {}
    for line in path.read_bytes().splitlines():
        if not line.startswith(b'{"timestamp"'):
            continue
        event = orjson.loads(line)
        match = pattern.search(str(event.get("event", "")))
        for shard in _SHARD.findall(match.group(0)) if match else ():
            found.setdefault(shard, seconds(event["timestamp"]))
    return found


def after(first: dict[str, float], then: dict[str, float]) -> dict[str, float]:
    """Per shard, seconds from ``first`` to ``then`` (shards in both)."""
    return {shard: round(then[shard] - at, 3) for shard, at in first.items() if shard in then}


def seconds(timestamp: str) -> float:
    """An ISO 8601 timestamp of the logs as seconds since the epoch."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
