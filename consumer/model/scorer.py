"""The scoring side of the model: load a prepared directory (:mod:`consumer.model.prepared`) and score batches.

:func:`load_prepared` takes the compiled model when there is one (:mod:`consumer.model.fastpath`: onnxruntime and
numpy, scikit-learn is never imported) and the pipeline otherwise (:class:`Scorer`: joblib and scikit-learn), and
logs which (``model_loaded``, ``model_path``: ``onnx`` or ``sklearn``). This module must never import mlflow,
directly or through another module: a shard has to start in well under a second and its memory is multiplied by
the number of shards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, overload

import numpy as np
import numpy.typing as npt
import structlog

from consumer.errors import ModelError
from consumer.model import fastpath
from consumer.model.features import Ride, features
from consumer.model.prepared import (
    MODEL_PATH_SKLEARN,
    PIPELINE_FILE,
    ModelInfo,
    PreparedMetadata,
    model_info,
    read_metadata,
    read_state,
)

__all__ = ["AnyScorer", "Predictor", "Scorer", "load_prepared", "preload", "single_threaded"]


class Predictor(Protocol):
    """What ``pipeline.joblib`` holds (scikit-learn has no type hints): a fitted pipeline whose ``predict`` takes
    feature dicts (:func:`consumer.model.features.features`) and returns one duration per row."""

    def predict(self, rows: Sequence[Mapping[str, Any]], /) -> npt.ArrayLike: ...


_P = TypeVar("_P", bound=Predictor)


class Scorer:
    """A loaded pipeline and what it is. ``predict`` makes one vectorised call for the whole batch."""

    #: Which path scores (``model_path`` in logs and metrics); :class:`consumer.model.fastpath.OnnxScorer` says "onnx".
    path = MODEL_PATH_SKLEARN

    def __init__(self, pipeline: Predictor, info: ModelInfo) -> None:
        self._pipeline = pipeline
        self.info = info

    @property
    def pipeline(self) -> Predictor:
        """The scikit-learn pipeline itself (for checks and measurements; the processor calls ``predict``)."""
        return self._pipeline

    def predict(self, rides: Sequence[Ride]) -> npt.NDArray[np.float64]:
        """Durations in minutes, one per ride, in order. An empty batch gives an empty array; the model is not
        called."""
        if not rides:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self._pipeline.predict([features(ride) for ride in rides]), dtype=np.float64)

    def __repr__(self) -> str:
        return f"Scorer({self.info!r})"


#: What :func:`load_prepared` returns: both have ``predict(rides)``, ``info`` and ``path``.
AnyScorer = Scorer | fastpath.OnnxScorer


def single_threaded(pipeline: _P) -> _P:
    """Set ``n_jobs=1`` on every step that has it (in place) and return the pipeline.

    A RandomForest with ``n_jobs=-1`` starts a thread pool per predict call: on small batches and two cores that
    is slower than scoring on the calling thread, and every shard process would compete for all the cores.
    """
    if not (hasattr(pipeline, "get_params") and hasattr(pipeline, "set_params")):
        return pipeline  # not a scikit-learn estimator: no n_jobs to set
    params = pipeline.get_params(deep=True)
    single = {key: 1 for key, value in params.items() if key.endswith("n_jobs") and value != 1}
    if single:
        pipeline.set_params(**single)
    return pipeline


@overload
def load_prepared(path: Path, *, prefer_compiled: Literal[False]) -> Scorer: ...
@overload
def load_prepared(path: Path, *, prefer_compiled: bool = True) -> AnyScorer: ...


def load_prepared(path: Path, *, prefer_compiled: bool = True) -> AnyScorer:
    """Load a prepared directory: its compiled model if it has one that loads (and ``prefer_compiled``), else its
    pipeline. Raise :class:`ModelError` if it is incomplete, its pipeline was prepared with another scikit-learn
    version (pickles do not cross versions safely), or does not hold a model with ``predict``.

    The scorer :func:`preload` made for the same directory is returned as it is (a fork server's workers share
    it). With logging configured (:func:`consumer.runtime.logs.configure_logging`), ``model_loaded`` says which path
    scores and why; unconfigured, nothing is logged (structlog's default would print on stdout).
    """
    path = Path(path)
    if prefer_compiled and _preloaded is not None and _preloaded[0] == path.resolve():
        _log_loaded(_preloaded[1], "preloaded")
        return _preloaded[1]
    metadata = read_metadata(path)
    info = model_info(metadata)
    state = read_state(path) if prefer_compiled else None
    reason = "not preferred" if not prefer_compiled else "prepared without a compiled model"
    if state is not None and state.compiled:
        try:
            compiled = fastpath.load(path, info)
        except ModelError as exc:
            reason = str(exc)
            if structlog.is_configured():
                structlog.get_logger().warning("compiled_model_unusable", error=reason)
        else:
            agreement = (
                state.heldout_max_abs_diff if state.heldout_max_abs_diff is not None else state.probe_max_abs_diff
            )
            _log_loaded(compiled, f"compiled, max abs diff {agreement} minutes on {state.used_features} features")
            return compiled
    elif state is not None:
        reason = state.reason or "not compiled"
    scorer = _load_pipeline(path, metadata, info)
    _log_loaded(scorer, reason)
    return scorer


_preloaded: tuple[Path, AnyScorer] | None = None


def preload(path: Path) -> AnyScorer:
    """Load ``path`` once for this process and the processes it forks: :func:`load_prepared` of the same
    directory then returns this scorer instead of loading it again (see :mod:`consumer.runtime.forkserver`)."""
    global _preloaded
    scorer = load_prepared(path)
    _preloaded = (Path(path).resolve(), scorer)
    return scorer


def _log_loaded(scorer: AnyScorer, why: str) -> None:
    if structlog.is_configured():
        structlog.get_logger().info("model_loaded", model_path=scorer.path, version=scorer.info.version, why=why)


def _load_pipeline(path: Path, metadata: PreparedMetadata, info: ModelInfo) -> Scorer:
    import joblib
    import sklearn

    prepared_with = metadata.get("sklearn_version")
    if prepared_with != sklearn.__version__:
        raise ModelError(
            f"{path}: prepared with scikit-learn {prepared_with}, this process has {sklearn.__version__};"
            " prepare the model again with this image"
        )
    try:
        pipeline = joblib.load(path / PIPELINE_FILE)
    except FileNotFoundError:
        raise ModelError(f"{path}: no {PIPELINE_FILE}") from None
    except Exception as exc:  # unpickling can fail in many ways; each means "unusable"
        raise ModelError(f"{path}: cannot load {PIPELINE_FILE}: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(pipeline, "predict", None)):
        raise ModelError(f"{path}: {PIPELINE_FILE} holds a {type(pipeline).__name__}, which has no predict()")
    return Scorer(single_threaded(pipeline), info)
