"""The model prepared in a child process (consumer/runtime/preparation.py), against the real MLflow store: the
launcher holds neither MLflow nor scikit-learn afterwards; a refused model stops the caller with the child's
message; a stop during the preparation ends the child too; the child needs nothing the image lacks (mlflow-skinny
reading the registry from a tracking server)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from consumer.errors import ModelError
from consumer.model.prepared import METADATA_FILE
from consumer.runtime.preparation import prepare_model
from consumer.runtime.settings import ModelSettings
from consumer.tools.harness import wait_for
from consumer.tools.paths import REPO_ROOT
from tests.support.models import RegisteredModel
from tests.support.tracking import tracking_server

pytestmark = pytest.mark.usefixtures("mlflow_isolation", "trips_file")

#: What the launcher must not hold once the model is prepared: MLflow and what it and the model's preparation bring.
HEAVY = {"mlflow", "sklearn", "scipy", "pandas", "pyarrow", "skl2onnx", "onnx", "onnxruntime", "skops", "joblib"}

#: The launcher up to the daemon's start (settings, jars, properties, the model, its metrics and health answers),
#: then the top-level modules it holds.
LAUNCHER = """
import json, sys, urllib.error, urllib.request
from consumer.runtime.health import HealthServer, LauncherState
from consumer.runtime.launcher import prepare_daemon
from consumer.runtime.logs import configure_logging
from consumer.runtime.settings import load_settings

settings = load_settings()
configure_logging(settings.log_level, component="launcher")
state = LauncherState(settings.prometheus_multiproc_dir)
state.metrics.empty()
server = HealthServer(state, "127.0.0.1", 0).start()
command, env = prepare_daemon(settings, state=state)
for path in ("/metrics", "/healthz", "/readyz"):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10).read()
    except urllib.error.HTTPError:
        pass  # /readyz is 503 until the daemon runs
server.stop()
modules = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"prepared": env["PREPARED_MODEL_DIR"], "modules": modules}))
"""

#: prepare_model under the launcher's stop signals; says so when a stop ended it.
STOPPABLE = """
from consumer.runtime.logs import configure_logging
from consumer.runtime.preparation import prepare_model
from consumer.runtime.settings import ModelSettings
from consumer.runtime.supervision import StopRequested, StopSignals

configure_logging()
with StopSignals():
    try:
        prepare_model(ModelSettings())
    except StopRequested:
        print("stopped during the preparation", flush=True)
"""

#: As STOPPABLE, with the stop signal landing as the preparation process is forked: its handler runs in an at-fork
#: hook, where Python reports the StopRequested it raises as "Exception ignored" instead of raising it.
STOPPED_AT_THE_FORK = """
import os, signal, time
from consumer.runtime.logs import configure_logging
from consumer.runtime.preparation import prepare_model
from consumer.runtime.settings import ModelSettings
from consumer.runtime.supervision import StopRequested, StopSignals

configure_logging()
with StopSignals() as stop:
    os.register_at_fork(after_in_parent=lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.5)))
    try:
        prepare_model(ModelSettings(), interrupt=stop.check)
    except StopRequested:
        print("stopped during the preparation", flush=True)
"""


def model_env(trained: RegisteredModel, cache_dir: Path, **more: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MODEL_", "ALLOW_PICKLE", "AWS_"))}
    env.update(
        MLFLOW_TRACKING_URI=trained.tracking_uri,
        MODEL_URI=trained.uri,
        MODEL_CACHE_DIR=str(cache_dir),
        AWS_EC2_METADATA_DISABLED="true",
        **more,
    )
    return env


def test_the_launcher_holds_neither_mlflow_nor_scikit_learn_once_the_model_is_prepared(trained_skops, tmp_path):
    env = model_env(
        trained_skops,
        tmp_path / "cache",
        AWS_REGION="us-east-1",
        INPUT_STREAM_NAME="rides",
        PREDICTIONS_STREAM_NAME="predictions",
        DEAD_LETTER_STREAM_NAME="dead-letters",
        KCL_APPLICATION_NAME="preparation-test",
        CONSUMER_WORK_DIR=str(tmp_path / "work"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        JAVA_BIN=sys.executable,  # checked to be an executable; the daemon is not started
    )

    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )

    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout)
    assert sorted(HEAVY & set(out["modules"])) == []
    assert json.loads((Path(out["prepared"]) / METADATA_FILE).read_text())["version"] == trained_skops.version
    assert '"component":"model_preparation"' in done.stderr  # the child's log lines, on the launcher's stderr


def test_a_refused_pickle_model_stops_the_preparation_naming_the_model_and_the_setting(
    trained_cloudpickle, tmp_path, monkeypatch
):
    uri = trained_cloudpickle.result.model_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_cloudpickle.tracking_uri)  # the child's environment

    with pytest.raises(ModelError, match=rf"^{uri}: the model is in cloudpickle format.*ALLOW_PICKLE_MODELS=true"):
        prepare_model(ModelSettings(model_uri=uri, model_cache_dir=tmp_path, allow_pickle_models=False))
    assert list(tmp_path.iterdir()) == []


def test_the_operators_trust_settings_reach_the_preparation_process(trained_cloudpickle, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_cloudpickle.tracking_uri)
    settings = ModelSettings(
        model_uri=trained_cloudpickle.uri, model_cache_dir=tmp_path / "cache", allow_pickle_models=True
    )

    prepared = prepare_model(settings)

    metadata = json.loads((prepared.path / METADATA_FILE).read_text())
    assert (metadata["flavor_format"], metadata["version"]) == ("cloudpickle", trained_cloudpickle.version)
    assert prepared.path.parent == tmp_path / "cache"


def test_score_with_a_refused_model_exits_2_naming_the_model_and_the_setting(trained_cloudpickle, trips_file, tmp_path):
    env = model_env(trained_cloudpickle, tmp_path / "cache")
    output = tmp_path / "scored.parquet"

    done = subprocess.run(
        [sys.executable, "-m", "consumer", "score", "--input", str(trips_file), "--output", str(output)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 2, done.stderr[-3000:]
    assert f"consumer: {trained_cloudpickle.uri}: the model is in cloudpickle format" in done.stderr
    assert "ALLOW_PICKLE_MODELS=true" in done.stderr
    assert not output.exists()


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """A tracking URI on 127.0.0.1 whose server never answers: connections wait in its backlog, unread."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def preparation_children(parent: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in parent.children(recursive=True):
        try:
            if "consumer.runtime.preparation" in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stop_during_the_preparation_ends_the_preparation_process(silent_registry, tmp_path, signum):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MODEL_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=silent_registry, MODEL_URI="models:/ride-duration@production")
    env.update(MODEL_CACHE_DIR=str(tmp_path / "cache"), MLFLOW_DISABLE_TELEMETRY="true")
    caller = subprocess.Popen(
        [sys.executable, "-c", STOPPABLE], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        parent = psutil.Process(caller.pid)
        assert wait_for(lambda: preparation_children(parent), timeout=120, interval=0.05), "no preparation process"
        (child,) = preparation_children(parent)

        caller.send_signal(signum)
        out, err = caller.communicate(timeout=120)

        if signum == signal.SIGTERM:
            assert caller.returncode == 0, err.decode()[-3000:]
            assert out.decode() == "stopped during the preparation\n"
        gone, _ = psutil.wait_procs([child], timeout=60)
        assert gone, "the preparation process outlived its caller"
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()


def test_a_stop_whose_exception_python_swallowed_at_the_fork_still_ends_the_preparation(silent_registry, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MODEL_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=silent_registry, MODEL_URI="models:/ride-duration@production")
    env.update(MODEL_CACHE_DIR=str(tmp_path / "cache"), MLFLOW_DISABLE_TELEMETRY="true")
    caller = subprocess.Popen(
        [sys.executable, "-c", STOPPED_AT_THE_FORK],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = caller.communicate(timeout=120)  # the registry never answers: only the stop ends the wait
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    assert "Exception ignored" in err.decode(), err.decode()[-3000:]  # the signal did land in the at-fork hook
    assert (caller.returncode, out.decode()) == (0, "stopped during the preparation\n"), err.decode()[-3000:]


def test_the_preparation_process_needs_only_the_images_packages(trained_skops, tmp_path):
    """The child as the image runs it: mlflow-skinny (no SQL store, no pandas), the registry behind a tracking
    server, everything outside Pipfile.lock's default section refused (tests/support/image_imports.py)."""
    code = (
        "from tests.support.image_imports import image_packages_only\n"
        "image_packages_only()\n"
        "import runpy\n"
        "runpy.run_module('consumer.runtime.preparation', run_name='__main__')\n"
    )
    request = {"model_uri": trained_skops.uri, "model_cache_dir": str(tmp_path / "cache")}
    with tracking_server(trained_skops.store, tmp_path) as url:
        env = {**os.environ, "MLFLOW_TRACKING_URI": url}
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(request),
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )

    assert done.returncode == 0, done.stderr[-4000:]
    answer = json.loads(done.stdout)
    assert answer["version"] == trained_skops.version
    assert (Path(answer["path"]) / METADATA_FILE).is_file()
