"""Fixtures for the protocol tier: record_processor.py as a subprocess, fed MultiLang JSON lines, writing to the
Kinesis emulator. The model is a small pipeline prepared the way the launcher prepares one."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.runtime.resources import record_processor_path
from consumer.tools.paths import REPO_ROOT
from tests.support.models import model_pipeline, training_rows, write_prepared


@pytest.fixture(scope="session")
def prepared_model(tmp_path_factory) -> Path:
    """A small DictVectorizer + RandomForest pipeline in the prepared-artifact format shard processes load."""
    from sklearn.ensemble import RandomForestRegressor

    rows, durations = training_rows(head=3000)
    fitted = model_pipeline(RandomForestRegressor(n_estimators=5, max_depth=8, random_state=0)).fit(rows, durations)
    return write_prepared(tmp_path_factory.mktemp("prepared"), fitted)


class Processor:
    """record_processor.py in a subprocess; ``send`` writes one action, ``receive`` reads the next one."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(record_processor_path())],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout_lines: list[str] = []
        self._actions: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout_lines.append(line)
            if line.strip():
                self._actions.put(json.loads(line))
        self._actions.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.extend(self.process.stderr)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """The next action the processor wrote, or None when its stdout closed."""
        try:
            return self._actions.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer within {timeout}s; stderr:\n{self.stderr}") from None

    def exit_code(self, timeout: float = 30.0) -> int:
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        return self.process.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def log_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stderr if line.startswith("{")]


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
    started: list[Processor] = []

    def start(**overrides: str) -> Processor:
        processor = Processor({**processor_env, **overrides})
        started.append(processor)
        return processor

    yield start
    for processor in started:
        if processor.process.poll() is None:
            processor.process.kill()
            processor.process.wait()
