"""Stream helpers shared by the local stack, the replayer, the tail tool and the ledger: create a stream and wait for
it, list its shards. Clients come from :func:`consumer.runtime.aws.kinesis_client`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from consumer.errors import ConsumerError
from consumer.runtime.aws import KinesisClient

__all__ = [
    "DUMMY_CREDENTIALS",
    "StreamTimeout",
    "create_stream",
    "list_shards",
    "wait_for_stream_active",
]

#: Any value works against the emulators; real-looking shapes keep SDKs that validate them quiet.
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIALOCALSTACKDUMMY0", "AWS_SECRET_ACCESS_KEY": "local-dummy-secret"}


class StreamTimeout(ConsumerError):
    """A stream did not reach the expected state in time."""

    def __init__(self, stream_name: str, status: str, timeout: float) -> None:
        super().__init__(f"stream {stream_name!r} still {status} after {timeout:g} s")
        self.stream_name = stream_name
        self.status = status
        self.timeout = timeout


def wait_for_stream_active(
    client: KinesisClient,
    stream_name: str,
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll DescribeStreamSummary until the stream is ACTIVE; raise :class:`StreamTimeout` after ``timeout``."""
    deadline = time.monotonic() + timeout
    status = "UNKNOWN"
    while True:
        try:
            summary = client.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
            status = summary["StreamStatus"]
        except client.exceptions.ResourceNotFoundException:
            status = "NOT_FOUND"
        if status == "ACTIVE":
            return
        if time.monotonic() >= deadline:
            raise StreamTimeout(stream_name, status, timeout)
        sleep(interval)


def create_stream(client: KinesisClient, stream_name: str, shards: int = 1, *, timeout: float = 30.0) -> None:
    """Create a provisioned stream with ``shards`` shards and wait until it is ACTIVE.

    A stream that already exists is not an error (it is waited for): test sessions and ``make`` targets can call
    this twice.
    """
    with contextlib.suppress(client.exceptions.ResourceInUseException):
        client.create_stream(StreamName=stream_name, ShardCount=shards)
    wait_for_stream_active(client, stream_name, timeout=timeout)


def list_shards(client: KinesisClient, stream_name: str) -> list[dict[str, Any]]:
    """All shards of a stream, open and closed, following ListShards pagination."""
    response = client.list_shards(StreamName=stream_name)
    shards: list[dict[str, Any]] = [dict(shard) for shard in response["Shards"]]
    while token := response.get("NextToken"):
        response = client.list_shards(NextToken=token)
        shards.extend(dict(shard) for shard in response["Shards"])
    return shards
