"""Process plumbing shared by whatever starts children that must not outlive their parent.

Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) has the kernel signal a child when its parent dies, even
by SIGKILL, when nothing of the parent runs any more to stop it. Two edges: it fires when the *thread* that
started the child ends (so only children of the main thread are tied), and a parent that dies between the fork and
the ``prctl`` is missed (so the child checks its parent afterwards). It survives ``exec`` of a program that is not
set-user-ID, e.g. the JVM.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

__all__ = ["die_with_parent", "tied_to_this_process"]

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, or None elsewhere than Linux/glibc."""
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError, AttributeError):
        function: Callable[..., int] = ctypes.CDLL("libc.so.6", use_errno=True).prctl
        return function
    return None


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Linux: have the kernel send ``signum`` to this process when its parent dies, even by SIGKILL. Call it in the
    child of a single-threaded parent (after fork); elsewhere than Linux/glibc it does nothing."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)


def tied_to_this_process(signum: int, *, or_this_thread: bool = False) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that gives the child ``signum`` when this process dies; None when
    that cannot work here (not Linux, or not called from the main thread: the signal would come when the calling
    thread ends). ``or_this_thread``: called from another thread, tie the child to that thread all the same (it
    gets ``signum`` when the thread ends, or the process), for a thread that lives as long as its children must.
    Everything is looked up before the fork: in the child of a threaded parent, the function only calls ``prctl``
    and ``getppid``, and kills the child at once if this process is already gone."""
    prctl = _prctl()
    if prctl is None or (threading.current_thread() is not threading.main_thread() and not or_this_thread):
        return None
    parent = os.getpid()

    def tie() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return tie
