"""The model a pod serves now: a pointer to a prepared directory (:mod:`consumer.model.prepared`), published
atomically by the launcher and followed by the processes that score.

The pointer is a symbolic link (``<CONSUMER_WORK_DIR>/model-current``) whose target is a prepared directory. The
launcher publishes a new version by creating a new link beside it and renaming it over the old one
(:func:`publish`): ``rename(2)`` replaces the link in one step, so a reader finds either the old target or the new
one, never half of either. Prepared directories are never changed once published, and a version stays in the
model cache after it is replaced, so a process still scoring with the old one keeps a complete directory.

A :class:`Follower` holds the scorer of the pointer's target and loads the new one when the target changes; a
shard asks it at every batch boundary (one ``readlink(2)``), the fork server in its idle loop. The scorer module
(numpy, onnxruntime) is imported only when a follower loads a model: the launcher publishes without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from consumer.errors import ModelError

if TYPE_CHECKING:
    from consumer.model.scorer import AnyScorer

__all__ = ["POINTER_NAME", "Follower", "publish", "target"]

#: The pointer's name in the launcher's work directory.
POINTER_NAME = "model-current"


def publish(pointer: Path, prepared: Path) -> None:
    """Point ``pointer`` at the prepared directory ``prepared``, replacing whatever it named, in one step."""
    pointer = Path(pointer)
    staging = pointer.with_name(f".{pointer.name}.{os.getpid()}.new")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    os.symlink(Path(prepared).resolve(), staging)
    os.replace(staging, pointer)


def target(pointer: Path) -> Path:
    """The prepared directory ``pointer`` names now: the link's target, or ``pointer`` itself (resolved) when it is
    a plain directory (a process started on one directory, which never changes). Raises OSError if it is gone."""
    pointer = Path(pointer)
    try:
        link = os.readlink(pointer)
    except OSError:
        if not pointer.is_dir():
            raise
        return pointer.resolve()
    return (pointer.parent / link).resolve()


def _load(path: Path) -> AnyScorer:
    from consumer.model.scorer import load_prepared

    return load_prepared(path)


class Follower:
    """The scorer of the model the pointer names, loaded again when the pointer moves (:meth:`check`).

    ``load`` loads a prepared directory (default: :func:`consumer.model.scorer.load_prepared`; the fork server
    passes :func:`~consumer.model.scorer.preload`, so the workers it forks share the new model). A directory that
    fails to load is logged (``model_switch_failed``) and not tried again until the pointer names another one: the
    current scorer keeps scoring meanwhile.
    """

    def __init__(self, pointer: Path, *, load: Callable[[Path], AnyScorer] = _load) -> None:
        self._pointer = Path(pointer)
        self._load = load
        self._target = target(self._pointer)
        self.scorer: AnyScorer = load(self._target)
        self._failed: Path | None = None

    @property
    def path(self) -> Path:
        """The prepared directory of :attr:`scorer`."""
        return self._target

    def check(self) -> AnyScorer | None:
        """The new scorer if the pointer names another directory than the current one and it loads; else None."""
        try:
            now = target(self._pointer)
        except OSError:
            return None  # the launcher is replacing the pointer's directory: ask again at the next boundary
        if now == self._target or now == self._failed:
            return None
        try:
            scorer = self._load(now)
        except (ModelError, OSError) as exc:
            self._failed = now
            if structlog.is_configured():
                structlog.get_logger().warning(
                    "model_switch_failed", path=str(now), error=str(exc), serving=self.scorer.info.version
                )
            return None
        self._target, self.scorer, self._failed = now, scorer, None
        return scorer
