"""Fixtures for the unit tier: no emulator, nothing beyond loopback; the only subprocesses are the launcher and the
fork server driven by fakes (tests/support/launcher.py, tests/support/fork_server.py)."""

import pytest

REQUIRED = {
    "AWS_REGION": "eu-west-1",
    "INPUT_STREAM_NAME": "ride_events",
    "PREDICTIONS_STREAM_NAME": "ride_predictions",
    "DEAD_LETTER_STREAM_NAME": "ride_dead_letters",
    "KCL_APPLICATION_NAME": "ride-duration",
    "MODEL_URI": "models:/ride-duration@production",
}


@pytest.fixture
def env(monkeypatch):
    for name in [*REQUIRED, "AWS_DEFAULT_REGION", "TEST_RUN", "KCL_INITIAL_POSITION", "AWS_ENDPOINT_URL_KINESIS"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch
