"""The model of ``MODEL_URI`` prepared as the settings say (resolve, download, the trust rules, the fast path),
once per process that starts a deployment: the stream's launcher, ``score`` and ``serve``.

The preparation runs in a short-lived child process, ``python -m consumer.runtime.preparation``, so the caller never
imports MLflow, scikit-learn, skl2onnx or what they bring: the launcher lives as long as the pod and would hold them
to the end (docs/architecture.md, "Model preparation", says why a child process and not an init container).

The child and its caller speak through three channels:

- stdin: the model's settings (:class:`~consumer.runtime.settings.ModelSettings`) as one JSON object; everything
  else, MLFLOW_TRACKING_URI and the AWS credentials among it, comes in the caller's environment;
- stderr, shared with the caller: the child's JSON log lines (``component`` ``model_preparation``);
- stdout: one JSON line, ``{"path": ..., "version": ...}``, or ``{"error": ...}`` with a non-zero exit status, which
  the caller raises as :class:`~consumer.errors.ModelError`. Anything else the child's libraries print goes to
  stderr.

:func:`resolve_version` runs the same child with ``"resolve_only": true`` in the request: it resolves MODEL_URI and
answers ``{"version": ...}`` without downloading anything (the launcher's watch of a registry alias, for a registry
it cannot ask over HTTP itself: :mod:`consumer.runtime.modelwatch`).

The child dies with the thread that started it (the parent-death signal, :mod:`consumer.runtime.process`: the
launcher's main thread at start-up, its model watch later) and is killed when its caller stops waiting for it (a
stop signal during the launcher's start-up, an interrupt).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from consumer.errors import ModelError
from consumer.model.prepared import read_metadata
from consumer.runtime.logs import configure_logging, get_logger
from consumer.runtime.process import tied_to_this_process
from consumer.runtime.settings import ModelSettings

__all__ = ["COMPONENT", "Prepared", "main", "prepare_model", "resolve_version"]

#: The ``component`` of the child's log lines.
COMPONENT = "model_preparation"
#: The settings the child is given (the rest of ModelSettings is for the processes that score).
_REQUEST_FIELDS = {"model_uri", "model_cache_dir", "allow_pickle_models", "model_trusted_types", "log_level"}


class Prepared(NamedTuple):
    """The prepared directory and the seconds it took (a reused one takes the child's start-up and a look-up)."""

    path: Path
    seconds: float


#: How often the wait for the child calls ``interrupt`` (seconds).
_POLL_SECONDS = 0.2


def prepare_model(settings: ModelSettings, *, interrupt: Callable[[], None] | None = None) -> Prepared:
    """Prepare ``settings.model_uri`` in ``settings.model_cache_dir`` in a child process; a prepared one is reused.
    Logs ``model_preparing`` and ``model_prepared``; raises :class:`consumer.errors.ModelError` with the child's
    message (it names the URI, and the setting when one decides).

    ``interrupt`` is called a few times a second while the child runs; whatever it raises ends the wait, and the
    child is killed. The launcher passes its stop check: a stop signal's handler raises in the launcher, but Python
    swallows an exception raised while it runs its at-fork hooks (the signal landing as the child is forked), so the
    wait asks again instead of trusting that the exception arrived."""
    log = get_logger()
    log.info("model_preparing", model_uri=settings.model_uri)
    started = time.perf_counter()
    request = settings.model_dump_json(include=_REQUEST_FIELDS).encode()
    answer = _run_child(request, settings.model_uri, interrupt or (lambda: None))
    seconds = time.perf_counter() - started
    path = Path(answer["path"])
    log.info(
        "model_prepared",
        model_uri=settings.model_uri,
        version=answer.get("version"),
        path=str(path),
        seconds=round(seconds, 2),
    )
    return Prepared(path, seconds)


def resolve_version(settings: ModelSettings) -> str:
    """The version ``settings.model_uri`` names now (an alias's current version), asked in a child process that
    downloads nothing; :class:`consumer.errors.ModelError` when the registry cannot tell."""
    request = json.loads(settings.model_dump_json(include=_REQUEST_FIELDS)) | {"resolve_only": True}
    answer = _run_child(json.dumps(request).encode(), settings.model_uri, lambda: None, key="version")
    return str(answer["version"])


def _run_child(request: bytes, model_uri: str, interrupt: Callable[[], None], *, key: str = "path") -> dict[str, Any]:
    process = subprocess.Popen(
        [sys.executable, "-m", __name__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        # Its own session: a terminal's Ctrl-C reaches the caller alone, which ends the child below.
        start_new_session=True,
        preexec_fn=tied_to_this_process(signal.SIGKILL, or_this_thread=True),  # only prctl and getppid run in it
    )
    try:
        out = _wait(process, request, interrupt)
    finally:
        if process.poll() is None:  # the caller stopped waiting (a stop signal raised in it): the child goes too
            process.kill()
            process.wait()
    answer = _answer(out)
    if process.returncode == 0 and isinstance(answer.get(key), str):
        return answer
    if isinstance(answer.get("error"), str):
        raise ModelError(answer["error"])
    raise ModelError(f"{model_uri}: the model preparation process {_ended(process.returncode)} without an answer")


def _wait(process: subprocess.Popen[bytes], request: bytes, interrupt: Callable[[], None]) -> bytes:
    """Write the request, read the child's stdout to its end, calling ``interrupt`` every _POLL_SECONDS."""
    pending: bytes | None = request
    while True:
        interrupt()
        try:
            out, _ = process.communicate(pending, timeout=_POLL_SECONDS)
            return out
        except subprocess.TimeoutExpired:
            pending = None  # a retry resumes writing the request where the last call stopped


def _answer(out: bytes) -> dict[str, Any]:
    """The child's answer: its last line of stdout, if that is a JSON object."""
    lines = out.decode("utf-8", errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _ended(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


# --- The child ---------------------------------------------------------------------------------------------------


def main() -> int:
    """The child: prepare the model of the settings on stdin, answer on stdout (see the module's docstring)."""
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # stdout is the answer's alone: whatever a library prints goes to stderr with the logs
    with os.fdopen(answer_fd, "w", encoding="utf-8") as channel:
        answer = _prepare(sys.stdin.read())
        channel.write(json.dumps(answer) + "\n")
    return 0 if "error" not in answer else 1


def _prepare(request: str) -> dict[str, str]:
    fields = json.loads(request)
    resolve_only = bool(fields.pop("resolve_only", False))
    settings = ModelSettings.model_validate(fields)
    configure_logging(settings.log_level, component=COMPONENT)
    try:
        if resolve_only:
            return {"version": _resolved_version(settings.model_uri, settings.model_cache_dir)}
        from consumer.model.prepare import prepare  # MLflow, scikit-learn: in this process only

        path = prepare(
            settings.model_uri,
            settings.model_cache_dir,
            allow_pickle=settings.allow_pickle_models,
            trusted_types=settings.model_trusted_types,
        )
        return {"path": str(path), "version": str(read_metadata(path)["version"])}
    except ModelError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one nobody foresaw still reaches the caller; its traceback is logged
        get_logger().exception("model_preparation_failed", model_uri=settings.model_uri)
        return {"error": f"{settings.model_uri}: preparing the model failed: {type(exc).__name__}: {exc}"}


def _resolved_version(model_uri: str, cache_dir: Path) -> str:
    import tempfile

    from consumer.model.resolve import resolve  # MLflow alone: nothing of scikit-learn for a question

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".resolve-", dir=cache_dir) as peek:
        source = resolve(model_uri, Path(peek), tracking_uri=None, registry_uri=None)
    if source.version is None:
        raise ModelError(f"{model_uri}: names no version (a directory or bucket path is read by its content)")
    return source.version


if __name__ == "__main__":
    sys.exit(main())
