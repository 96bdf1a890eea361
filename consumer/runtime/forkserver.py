"""The fork server ("zygote"): one process that has imported the shard code and loaded the model, and forks a
worker for every record processor the daemon starts.

Why: the daemon starts one Python process per leased shard. A plain shard process holds its own interpreter,
imports and model session, so a pod holds one copy of them per leased shard. Forked workers share all of that
copy-on-write (the imported objects are moved out of the garbage collector's reach with ``gc.freeze()`` so that
collections do not touch their pages), and each adds only what it allocates itself. What a shard costs with and
without the server is measured by the benchmark (docs/performance.md).

How: ``python -m consumer run`` starts ``python -m consumer.runtime.forkserver SOCKET`` after preparing the model
(:func:`start`) and puts SOCKET in the daemon's environment (:data:`consumer.runtime.forkclient.SOCKET_VARIABLE`).
``record_processor.py`` connects, passes its stdin/stdout/stderr (SCM_RIGHTS) and waits; the server forks a
worker onto those descriptors, which runs :func:`consumer.runtime.shard.main` exactly as a plain record processor would,
and reports the worker's wait status back, so the record processor ends as the worker did (exit 1 on an
unfinishable batch still stops the daemon). A worker dies with the server (parent-death signal); the server
kills a worker whose record processor is gone, or could not be told which worker is its own; the server exits
when the launcher does, even one killed by SIGKILL (parent-death signal). Without a server the
record processor runs the shard itself (the plain path).

The model: PREPARED_MODEL_DIR is the launcher's pointer (:mod:`consumer.model.current`). The server looks at it
between requests (at least once a second) and, when the launcher has published another version, loads that one
and freezes it again, so the workers forked from then on share it; the workers already running switch themselves
at their next batch boundary.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, cast

from structlog.typing import FilteringBoundLogger

from consumer.model.current import Follower
from consumer.runtime.forkclient import FORWARDED_SIGNALS
from consumer.runtime.process import die_with_parent, tied_to_this_process

__all__ = ["ForkServer", "main", "start"]

_HEADER = struct.Struct("!ci")  # the client's format: b"P" pid, b"S" wait status, b"E" refusal
_PEERCRED = struct.Struct("3i")  # pid, uid, gid of the connecting process
_READY = b"ready\n"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux
_WORKER_STOP_SECONDS = 5.0


# --- The launcher's side ------------------------------------------------------------------------------------------


@dataclass
class ForkServer:
    """A running fork server, as the launcher holds it."""

    process: subprocess.Popen[bytes]
    socket_path: Path

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (the server stops its remaining workers), then SIGKILL after ``timeout``; its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        return int(self.process.returncode)


def socket_path_for(work_dir: Path) -> Path:
    """``<work_dir>/fork-server.sock``, or a private temporary directory when that path is too long."""
    path = Path(work_dir).resolve() / "fork-server.sock"
    if len(str(path).encode()) <= _MAX_SOCKET_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix="consumer-fork-")) / "fork-server.sock"


def start(env: Mapping[str, str], work_dir: Path, *, timeout: float = 60.0) -> ForkServer:
    """Start the fork server with ``env`` (it needs PREPARED_MODEL_DIR) and wait until it serves.
    Raise RuntimeError, with the reason, if it does not get there within ``timeout`` seconds; anything raised
    meanwhile (a stop signal) kills it first.

    The server is tied to this process by the parent-death signal (SIGTERM: it stops its workers and goes), so a
    caller killed by SIGKILL does not leave it behind; it also polls its parent, where that signal does not exist."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = socket_path_for(work_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer.runtime.forkserver", str(path)],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        preexec_fn=tied_to_this_process(signal.SIGTERM),  # only prctl and getppid run in the child
    )
    try:
        line = _ready_line(process, timeout)
    except BaseException:
        process.kill()
        process.wait()
        raise
    if line != _READY:
        process.kill()
        status = process.wait()
        raise RuntimeError(f"the fork server did not start within {timeout:g}s (status {status}, said {line!r})")
    return ForkServer(process, path)


def _ready_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector, process.stdout:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(timeout=timeout):
            return process.stdout.readline()
    return b""


# --- The server ---------------------------------------------------------------------------------------------------


class _Server:
    """Accepts record processors on a Unix socket, forks a worker for each, reports each worker's end."""

    def __init__(self, listener: socket.socket, log: FilteringBoundLogger, follower: Follower | None = None) -> None:
        self._listener = listener
        self._log = log
        self._follower = follower
        self._selector = selectors.DefaultSelector()
        self._clients: dict[int, socket.socket] = {}  # worker pid -> its record processor's connection
        self._stopping = False
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)

    def serve(self, parent: int) -> None:
        signal.set_wakeup_fd(self._wake_write.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the wakeup fd
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        while not self._stopping:
            for key, _ in self._selector.select(timeout=1.0):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_read:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_read.recv(4096)
                else:
                    # Registered in _accept: a record processor's connection, with its worker's pid.
                    self._client_readable(cast(socket.socket, key.fileobj), key.data)
            self._reap()
            self._follow_model()
            if os.getppid() != parent:
                self._log.warning("fork_server_orphaned", parent=parent)
                break
        self._shutdown()

    def _follow_model(self) -> None:
        """Load the version the launcher published, if it changed, for the workers forked from now on."""
        scorer = self._follower.check() if self._follower is not None else None
        if scorer is None:
            return
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._log.info("fork_server_model_reloaded", version=scorer.info.version, model_path=scorer.path)

    def _stop(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        fds: list[int] = []
        pid: int | None = None
        try:
            _, uid, _ = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
            conn.settimeout(5.0)
            message, fds, _, _ = socket.recv_fds(conn, 16, 3)
            if uid != os.getuid() or message != b"F" or len(fds) != 3:
                raise ValueError(f"refused: uid {uid}, message {message!r}, {len(fds)} descriptors")
            pid = self._fork(fds, conn)
            conn.sendall(_HEADER.pack(b"P", pid))
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            if pid is None:
                self._log.warning("fork_server_request_refused", error=error)
                with contextlib.suppress(OSError):
                    conn.sendall(_HEADER.pack(b"E", 0))
            else:
                # Forked, but its record processor cannot learn which worker is its own: nobody would wait for
                # that worker or end it. It goes now (and _reap collects it).
                self._log.warning("fork_server_reply_failed", worker=pid, error=error, action="SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            conn.close()
            return
        finally:
            for fd in fds:
                os.close(fd)
        self._clients[pid] = conn
        self._selector.register(conn, selectors.EVENT_READ, pid)
        self._log.debug("worker_forked", worker=pid)

    def _fork(self, fds: list[int], conn: socket.socket) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_worker(fds, conn)
        return pid

    def _become_worker(self, fds: list[int], conn: socket.socket) -> NoReturn:
        """In the child: drop the server's state (its sockets, this request's connection included: only the
        server may answer the record processor), take the record processor's descriptors, run the shard."""
        try:
            die_with_parent(signal.SIGKILL)
            signal.set_wakeup_fd(-1)
            for signum in (*FORWARDED_SIGNALS, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt, as in a fresh process
            self._selector.close()
            for sock in (self._listener, self._wake_read, self._wake_write, conn, *self._clients.values()):
                sock.close()
            for target, fd in zip((0, 1, 2), fds, strict=True):
                os.dup2(fd, target)
                os.close(fd)
            _reopen_standard_streams()
        except BaseException:  # noqa: BLE001 - nothing of the shard ran yet; say why and end
            traceback.print_exc()
            os._exit(1)
        os._exit(_run_shard())

    def _client_readable(self, conn: socket.socket, pid: int) -> None:
        """The record processor never writes after its request: readable means it is gone."""
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if data:
            return
        self._log.warning("record_processor_gone", worker=pid, action="SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._selector.unregister(conn)

    def _reap(self) -> None:
        """Collect every child that has ended (a worker whose reply failed has no client, but must not linger as a
        zombie); tell each tracked worker's record processor how it ended."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self._clients.pop(pid, None)
            if conn is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn)
            with contextlib.suppress(OSError):
                conn.sendall(_HEADER.pack(b"S", status))
            conn.close()
            self._log.debug("worker_ended", worker=pid, status=status)

    def _shutdown(self) -> None:
        self._listener.close()
        for pid in list(self._clients):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _WORKER_STOP_SECONDS
        while self._clients and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in list(self._clients):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self._clients:
            pid, status = os.waitpid(-1, 0)
            conn = self._clients.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(_HEADER.pack(b"S", status))
                conn.close()


def _reopen_standard_streams() -> None:
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)


def _run_shard() -> int:
    """:func:`consumer.runtime.shard.main` with the exit rules of ``python record_processor.py``."""
    from consumer.runtime.shard import main as shard_main

    atexit._clear()  # the server's exit handlers are not the worker's
    try:
        code: str | int | None = shard_main()  # or SystemExit's code
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    _flush()
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _prepare() -> tuple[FilteringBoundLogger, Follower | None]:
    """Import everything a shard imports, load the model once, warm boto3; return the logger and the model."""
    from consumer.model import scorer as scoring
    from consumer.runtime import shard
    from consumer.runtime.logs import configure_logging, get_logger
    from consumer.runtime.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, component="fork_server")
    log = get_logger()
    if settings.prepared_model_dir is None:
        raise RuntimeError("PREPARED_MODEL_DIR is not set (the launcher sets it)")
    follower = Follower(settings.prepared_model_dir, load=scoring.preload)
    shard.sink_client(settings)  # loads botocore's service model and endpoint rules once, for every worker
    return log, follower


def main(argv: list[str] | None = None) -> int:
    """``python -m consumer.runtime.forkserver SOCKET``: prepare, listen, say ready on stdout, serve until stopped."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m consumer.runtime.forkserver SOCKET_PATH", file=sys.stderr)
        return 2
    path = Path(args[0])
    parent = os.getppid()
    log, follower = _prepare()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(previous)
    listener.listen(64)
    listener.setblocking(False)
    gc.collect()
    gc.freeze()  # everything so far is shared with the workers: keep the collector off those pages
    model = {} if follower is None else {"version": follower.scorer.info.version, "model_path": follower.scorer.path}
    log.info("fork_server_ready", socket=str(path), pid=os.getpid(), **model)
    os.write(1, _READY)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # stdout was only for "ready"; the launcher has closed its end
    os.close(null)
    try:
        _Server(listener, log, follower).serve(parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    log.info("fork_server_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
