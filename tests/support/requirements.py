"""What a test needs from the machine, and the one policy for when it is not there.

A test that needs a component (java, Node and the emulators, prometheus/promtool, podman, kubectl, hadolint) or a
data file (the January 2022 TLC parquet beside the repository) asks for it here. When it is missing the test is
skipped, saying what is missing and how to get it. Under ``CI=true`` every skip is a failure instead
(``tests/conftest.py`` turns it into one): CI installs everything, so a missing piece there is a broken setup,
never a silent skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["in_ci", "require_file", "require_tool", "unavailable"]


def in_ci() -> bool:
    """``CI=true`` (or ``1``): the environment CI runs in, where nothing may be missing."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def unavailable(reason: str) -> NoReturn:
    """Skip the test (or the fixture's tests) for ``reason``; under CI=true the skip is reported as a failure."""
    pytest.skip(reason)


def require_tool(name: str, hint: str, *, path: str | None = None) -> str:
    """The path of the executable ``name`` (searched on ``path``, default PATH), or :func:`unavailable`."""
    found = shutil.which(name, path=path)
    if found is None:
        unavailable(f"{name} is not on {'PATH' if path is None else path}: {hint}")
    return found


def require_file(path: Path, hint: str) -> Path:
    """``path`` if it is a file, or :func:`unavailable`."""
    if not path.is_file():
        unavailable(f"{path} is not on this machine: {hint}")
    return path
