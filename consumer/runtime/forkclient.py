"""The record processor's client side of the fork server: hand this process's stdin/stdout/stderr to a worker.

The daemon starts ``record_processor.py`` once per leased shard. With a fork server running
(:mod:`consumer.runtime.forkserver`, started by ``python -m consumer run``; its socket in :data:`SOCKET_VARIABLE`), that
process does not import the consumer: it passes its three standard descriptors over the Unix socket
(SCM_RIGHTS), the server forks a worker that already has everything imported and the model loaded, and this
process waits and then ends exactly as the worker did: the same exit status, or killed by the same signal.
SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to this process are passed on to the worker. If this process dies
(SIGKILL), the server kills the worker.

Only the standard library is imported here: this runs once per lease, before anything else. Without a fork
server (the variable unset, the socket missing or refusing) :func:`run` returns None and the caller runs the
shard in this process (:func:`consumer.runtime.shard.main`), as before.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time

__all__ = ["FORWARDED_SIGNALS", "SOCKET_VARIABLE", "run"]

#: The fork server's socket path, set by the launcher for the daemon and so for every record processor.
SOCKET_VARIABLE = "CONSUMER_FORK_SERVER_SOCKET"
#: Signals this process passes on to its worker.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)

#: Messages from the server: b"P" + worker pid, then b"S" + its wait status; b"E" + reason if it cannot fork.
_HEADER = struct.Struct("!ci")
#: How long to wait for an orphaned worker to die when the server is lost (it may linger as a zombie).
_LOST_SERVER_WAIT_SECONDS = 5.0


def _note(event: str, **fields: object) -> None:
    """One JSON log line on stderr (never stdout: the protocol channel)."""
    line = {"event": event, "component": "record_processor", "level": "warning", **fields}
    print(json.dumps(line), file=sys.stderr, flush=True)


def _receive(sock: socket.socket) -> tuple[bytes, int] | None:
    data = b""
    while len(data) < _HEADER.size:
        chunk = sock.recv(_HEADER.size - len(data))
        if not chunk:
            return None
        data += chunk
    kind, value = _HEADER.unpack(data)
    return kind, value


def run() -> int | None:
    """Run this shard in a worker of the fork server; return its exit status (or die of its signal).
    Return None, having changed nothing, when there is no fork server to use."""
    path = os.environ.get(SOCKET_VARIABLE)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        socket.send_fds(sock, [b"F"], [0, 1, 2])
        reply = _receive(sock)
    except OSError as exc:
        sock.close()
        _note("fork_server_unavailable", socket=path, error=f"{type(exc).__name__}: {exc}", fallback="in-process")
        return None
    if reply is None or reply[0] != b"P":
        sock.close()
        _note("fork_server_refused", socket=path, reply=repr(reply), fallback="in-process")
        return None
    worker = reply[1]

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(worker, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    # The worker holds the pipes now; without our copies the daemon sees EOF exactly when the worker closes them.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return _wait(sock, worker)


def _wait(sock: socket.socket, worker: int) -> int:
    status_reply = _receive(sock)
    if status_reply is None or status_reply[0] != b"S":
        # The server went away. Its workers die with it (parent-death signal); wait for ours, then fail loudly
        # so the daemon stops and the container restarts.
        deadline = time.monotonic() + _LOST_SERVER_WAIT_SECONDS
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        _note("fork_server_lost", worker=worker)
        return 1
    status = status_reply[1]
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum  # only if the signal is blocked
    return os.waitstatus_to_exitcode(status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
