"""pytest fixtures for the local emulators. Load them with ``pytest_plugins = ["tests.stack_fixtures"]`` in a test
module or in the root ``conftest.py`` (pytest refuses ``pytest_plugins`` in a non-root conftest).

- ``local_stack`` (session): one :class:`~consumer.tools.localstack.LocalStack` for the whole session, logs in a pytest
  temporary directory. Skipped when Node or the npm packages are missing, with the reason; when ``CI=true`` the
  tests fail instead, since CI installs them (``make setup``). ``LOCALSTACK_NODE_MODULES`` points at another
  ``node_modules`` than the repository's.
- ``kinesis`` (session): a boto3 Kinesis client for it.
- ``emulators_installed``: the ``node_modules`` path, for tests that start their own LocalStack (same skip rule).
- ``make_stream``: ``make_stream(shards=1) -> name``, a new ACTIVE stream with a unique name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.runtime.aws import KinesisClient
from consumer.tools.localstack import DEFAULT_NODE_MODULES, EmulatorNotInstalled, LocalStack

NODE_MODULES_VARIABLE = "LOCALSTACK_NODE_MODULES"


def node_modules() -> Path:
    """The ``node_modules`` the fixtures use: ``$LOCALSTACK_NODE_MODULES`` or the repository's."""
    configured = os.environ.get(NODE_MODULES_VARIABLE)
    return Path(configured) if configured else DEFAULT_NODE_MODULES


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail in CI (``CI=true``), where a missing emulator is a broken setup, not a choice."""
    if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
        pytest.fail(f"CI=true and the emulators cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def running_stack(work_dir: Path, **options: Any) -> Iterator[LocalStack]:
    """A started LocalStack for a fixture to yield from (skipped or failed as above when not installed); its
    logs are kept in ``work_dir``."""
    stack = LocalStack(work_dir, node_modules=node_modules(), **options)
    try:
        stack.start()
    except EmulatorNotInstalled as exc:
        skip_or_fail(str(exc))
    try:
        yield stack
    finally:
        stack.stop(keep_work_dir=True)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from running_stack(tmp_path_factory.mktemp("localstack"))


@pytest.fixture
def emulators_installed() -> Path:
    """The ``node_modules`` to give a LocalStack a test starts itself; skip (fail in CI) when not installed."""
    try:
        LocalStack(node_modules=node_modules()).check_installation()
    except EmulatorNotInstalled as exc:
        skip_or_fail(str(exc))
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
