"""Fixtures for the end-to-end tier: the real KCL MultiLangDaemon (Java) started by ``python -m consumer run``,
against kinesis-local and dynalite, with a model trained and registered in a local MLflow store."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumer.runtime.jars import default_java_bin
from consumer.tools.harness import ConsumerProcess, consumer_env
from tests.support.models import ModelStore, RegisteredModel, train_and_register
from tests.support.requirements import require_file
from tests.support.stack import Streams


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory: pytest.TempPathFactory) -> RegisteredModel:
    """The seed's pipeline trained on 20,000 real trips (20 trees, to keep the suite fast), registered @production."""
    require_file(default_java_bin(), "the daemon's Java runtime: `make setup` links it (scripts/build_jre.sh)")
    return train_and_register(ModelStore.at(tmp_path_factory.mktemp("mlflow")), sample=20_000, n_estimators=20)


@pytest.fixture
def start_consumer(
    local_stack, streams: Streams, registered_model: RegisteredModel, tmp_path: Path
) -> Iterator[Callable[..., ConsumerProcess]]:
    """Start ``python -m consumer run`` (same application and worker id on every call: a restart re-adopts its
    leases); every consumer still running at teardown is stopped."""
    application = f"e2e-{uuid.uuid4().hex[:8]}"
    started: list[ConsumerProcess] = []

    def start(worker_id: str = "worker-1", **extra: str) -> ConsumerProcess:
        env = consumer_env(
            local_stack.env(),
            input_stream=streams.input,
            predictions_stream=streams.predictions,
            dead_letter_stream=streams.dead_letters,
            model_uri=registered_model.uri,
            tracking_uri=registered_model.tracking_uri,
            application_name=application,
            work_dir=tmp_path,
            worker_id=worker_id,
            extra=extra,
        )
        consumer = ConsumerProcess(env, tmp_path / f"consumer-{worker_id}-{len(started)}.log").start()
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        if consumer.running():
            consumer.stop(timeout=60)
