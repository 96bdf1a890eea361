"""The model of ``MODEL_URI`` prepared as the settings say (resolve, download, the trust rules, the fast path),
once per process that starts a deployment: the stream's launcher, ``score`` and ``serve``.

It imports MLflow (through :mod:`consumer.model.prepare`) when called, never at import: whatever calls it pays for
that once, before anything long-lived starts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

from consumer.runtime.logs import get_logger
from consumer.runtime.settings import ModelSettings

__all__ = ["Prepared", "prepare_model"]


class Prepared(NamedTuple):
    """The prepared directory and the seconds it took (a reused one takes well under a second)."""

    path: Path
    seconds: float


def prepare_model(settings: ModelSettings) -> Prepared:
    """Prepare ``settings.model_uri`` in ``settings.model_cache_dir``; a prepared one is reused. Logs
    ``model_preparing`` and ``model_prepared``; raises :class:`consumer.errors.ModelError` naming the URI."""
    from consumer.model.prepare import prepare

    log = get_logger()
    log.info("model_preparing", model_uri=settings.model_uri)
    started = time.perf_counter()
    path = prepare(
        settings.model_uri,
        settings.model_cache_dir,
        allow_pickle=settings.allow_pickle_models,
        trusted_types=settings.model_trusted_types,
    )
    seconds = time.perf_counter() - started
    log.info("model_prepared", model_uri=settings.model_uri, path=str(path), seconds=round(seconds, 2))
    return Prepared(path, seconds)
