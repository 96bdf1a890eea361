"""Fixtures for the protocol tier: record_processor.py as a subprocess, fed MultiLang JSON lines, writing to the
Kinesis emulator. The model is a small pipeline prepared the way the launcher prepares one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.tools.multilang import MultiLangDriver
from consumer.tools.paths import REPO_ROOT
from tests.support.models import model_pipeline, training_rows, write_prepared


@pytest.fixture(scope="session")
def prepared_model(tmp_path_factory) -> Path:
    """A small DictVectorizer + RandomForest pipeline in the prepared-artifact format shard processes load."""
    from sklearn.ensemble import RandomForestRegressor

    rows, durations = training_rows(head=3000)
    fitted = model_pipeline(RandomForestRegressor(n_estimators=5, max_depth=8, random_state=0)).fit(rows, durations)
    return write_prepared(tmp_path_factory.mktemp("prepared"), fitted)


@pytest.fixture
def processor_env(local_stack, streams, prepared_model) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KCL_"))}
    env.update(local_stack.env())
    env.update(streams.env())
    env.update(
        KCL_APPLICATION_NAME="protocol-test",
        MODEL_URI="test://tiny",
        PREPARED_MODEL_DIR=str(prepared_model),
        PUT_MAX_ATTEMPTS="2",
        PUT_BACKOFF_MAX_SECONDS="0.2",
    )
    return env


@pytest.fixture
def start_processor(processor_env) -> Iterator[Any]:
    """Start record_processor.py with the protocol tier's environment (plus overrides), driven by the shared
    MultiLang driver (consumer.tools.multilang)."""
    started: list[MultiLangDriver] = []

    def start(**overrides: str) -> MultiLangDriver:
        processor = MultiLangDriver({**processor_env, **overrides}, cwd=REPO_ROOT)
        started.append(processor)
        return processor

    yield start
    for processor in started:
        processor.kill()
