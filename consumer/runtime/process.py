"""Process plumbing shared by whatever starts children that must not outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import signal

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Linux: have the kernel send ``signum`` to this process when its parent dies, even by SIGKILL. Call it in the
    child (after fork, or as a ``preexec_fn``); elsewhere than Linux/glibc it does nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
