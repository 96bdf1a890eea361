"""pytest fixtures for the local emulators, loaded for every tier by ``tests/conftest.py``.

- ``local_stack`` (session): one :class:`~consumer.tools.localstack.LocalStack` for the whole session, logs in a pytest
  temporary directory. Without Node or the npm packages its tests are skipped with the reason (a failure under
  ``CI=true``: :mod:`tests.support.requirements`). ``LOCALSTACK_NODE_MODULES`` points at another ``node_modules``
  than the repository's.
- ``kinesis`` (session): a boto3 Kinesis client for it.
- ``emulators_installed``: the ``node_modules`` path, for tests that start their own LocalStack (same rule).
- ``make_stream``: ``make_stream(shards=1) -> name``, a new ACTIVE stream with a unique name.
- ``streams``: the consumer's three streams (:class:`Streams`), new for each test.
- :func:`lease_table`: the daemon's lease table of an application (shard id -> owner and checkpoint).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from consumer.runtime.aws import KinesisClient
from consumer.tools.localstack import DEFAULT_NODE_MODULES, EmulatorNotInstalled, LocalStack
from tests.support.requirements import unavailable

NODE_MODULES_VARIABLE = "LOCALSTACK_NODE_MODULES"


def node_modules() -> Path:
    """The ``node_modules`` the fixtures use: ``$LOCALSTACK_NODE_MODULES`` or the repository's."""
    configured = os.environ.get(NODE_MODULES_VARIABLE)
    return Path(configured) if configured else DEFAULT_NODE_MODULES


def running_stack(work_dir: Path, **options: Any) -> Iterator[LocalStack]:
    """A started LocalStack for a fixture to yield from (unavailable, as above, when not installed); its logs are
    kept in ``work_dir``."""
    stack = LocalStack(work_dir, node_modules=node_modules(), **options)
    try:
        stack.start()
    except EmulatorNotInstalled as exc:
        unavailable(str(exc))
    try:
        yield stack
    finally:
        stack.stop(keep_work_dir=True)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from running_stack(tmp_path_factory.mktemp("localstack"))


@pytest.fixture
def emulators_installed() -> Path:
    """The ``node_modules`` to give a LocalStack a test starts itself; unavailable when not installed."""
    try:
        LocalStack(node_modules=node_modules()).check_installation()
    except EmulatorNotInstalled as exc:
        unavailable(str(exc))
    return node_modules()


@pytest.fixture(scope="session")
def kinesis(local_stack: LocalStack) -> KinesisClient:
    return local_stack.kinesis_client()


@pytest.fixture
def make_stream(local_stack: LocalStack) -> Callable[..., str]:
    def make(shards: int = 1, *, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        local_stack.create_stream(name, shards)
        return name

    return make


@dataclass(frozen=True)
class Streams:
    """The consumer's three streams: rides in (``input``), predictions and dead letters out."""

    input: str
    predictions: str
    dead_letters: str

    @classmethod
    def create(cls, stack: LocalStack, *, input_shards: int = 2) -> Streams:
        """New streams with unique names, ACTIVE: the input with ``input_shards`` shards, the outputs with one."""
        suffix = uuid.uuid4().hex[:8]
        streams = cls(f"rides-{suffix}", f"predictions-{suffix}", f"dead-letters-{suffix}")
        stack.create_stream(streams.input, input_shards)
        stack.create_stream(streams.predictions, 1)
        stack.create_stream(streams.dead_letters, 1)
        return streams

    def env(self) -> dict[str, str]:
        """The settings that name them (INPUT_STREAM_NAME, PREDICTIONS_STREAM_NAME, DEAD_LETTER_STREAM_NAME)."""
        return {
            "INPUT_STREAM_NAME": self.input,
            "PREDICTIONS_STREAM_NAME": self.predictions,
            "DEAD_LETTER_STREAM_NAME": self.dead_letters,
        }


@pytest.fixture
def streams(local_stack: LocalStack) -> Streams:
    return Streams.create(local_stack)


def lease_table(stack: LocalStack, application: str) -> dict[str, dict[str, str]]:
    """The daemon's lease table (named after the application): shard id -> {"owner", "checkpoint"}; empty until the
    daemon has created the table."""
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=stack.dynamodb_endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    try:
        items = dynamodb.scan(TableName=application)["Items"]
    except dynamodb.exceptions.ResourceNotFoundException:
        return {}
    return {
        item["leaseKey"]["S"]: {
            "owner": item.get("leaseOwner", {}).get("S", ""),
            "checkpoint": item.get("checkpoint", {}).get("S", ""),
        }
        for item in items
    }
