"""The fast path's scoring side: a compiled model (:mod:`consumer.model.compile`) scored with onnxruntime and numpy.

A shard on the fast path never imports scikit-learn (whose import alone pulls scipy and pandas). The compiled model
takes a float32 matrix of the used columns only, built from :func:`consumer.model.features.features`: a string
feature ``k: v`` sets column ``k=v`` (the vectorizer's separator) to 1, a number sets column ``k``; a column the
trees never use, or a category the vectorizer never saw, is left out, exactly as DictVectorizer ignores an unknown
feature. A number beyond float32's range is refused as scikit-learn's trees refuse it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from consumer.errors import ModelError
from consumer.model.features import Ride, features
from consumer.model.prepared import FAST_MODEL_FILE, MODEL_PATH_ONNX, Layout, ModelInfo, read_layout

__all__ = ["OnnxScorer", "Session", "load"]


class _Input(Protocol):
    @property
    def name(self) -> str: ...


class Session(Protocol):
    """The part of ``onnxruntime.InferenceSession`` the scorer uses (onnxruntime has no type hints)."""

    def get_inputs(self) -> Sequence[_Input]: ...
    def run(self, output_names: None, input_feed: Mapping[str, npt.NDArray[np.float32]]) -> Sequence[Any]: ...


class OnnxScorer:
    """Scores a batch with the compiled model: the same interface as :class:`consumer.model.scorer.Scorer`."""

    path = MODEL_PATH_ONNX

    def __init__(self, session: Session, layout: Layout, info: ModelInfo) -> None:
        self._session = session
        self._layout = layout
        self._input = session.get_inputs()[0].name
        self.info = info

    def predict(self, rides: Sequence[Ride]) -> npt.NDArray[np.float64]:
        """Durations in minutes, one per ride, in order; an empty batch gives an empty array."""
        return self.predict_rows([features(ride) for ride in rides])

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float64]:
        """The same for feature dicts (what the pipeline's ``predict`` takes)."""
        if not rows:
            return np.empty(0, dtype=np.float64)
        matrix = _matrix(rows, self._layout)
        (output,) = self._session.run(None, {self._input: matrix})
        return np.asarray(output, dtype=np.float64).reshape(len(rows))

    def __repr__(self) -> str:
        return f"OnnxScorer({self.info!r})"


def _matrix(rows: Sequence[Mapping[str, Any]], layout: Layout) -> npt.NDArray[np.float32]:
    onehot, numeric, separator = layout.onehot, layout.numeric, layout.separator
    row_index: list[int] = []
    col_index: list[int] = []
    values: list[float] = []
    for r, row in enumerate(rows):
        for key, value in row.items():
            if isinstance(value, str):
                column = onehot.get(f"{key}{separator}{value}")
                if column is not None:
                    row_index.append(r)
                    col_index.append(column)
                    values.append(1.0)
            else:
                column = numeric.get(key)
                if column is not None:
                    row_index.append(r)
                    col_index.append(column)
                    values.append(float(value))
    with np.errstate(over="ignore"):
        cells = np.asarray(values, dtype=np.float32)
    if not np.isfinite(cells).all():
        # What scikit-learn's trees raise for the same rows: their input is float32 too.
        raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
    matrix = np.zeros((len(rows), layout.width), dtype=np.float32)
    matrix[row_index, col_index] = cells
    return matrix


#: onnxruntime (1.32 here) starts Microsoft's 1DS usage telemetry when it is imported: a few seconds later it looks up
#: mobile.events.data.microsoft.com and uploads, from every process that imports it. ``disable_telemetry_events()``
#: after the import is too late; this variable, set before the import, turns it off. (tests/e2e/test_egress.py
#: caught it.)
TELEMETRY_OFF = ("ORT_DISABLE_TELEMETRY", "1")


def load(directory: Path, info: ModelInfo) -> OnnxScorer:
    """Load the compiled model of a prepared directory, single-threaded. Raise ModelError if it cannot be."""
    os.environ.setdefault(*TELEMETRY_OFF)  # before the first import of onnxruntime in this process
    import onnxruntime

    directory = Path(directory)
    try:
        layout = read_layout(directory)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one shard, one core: no thread pool per call
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings would go to stderr unstructured
        session = onnxruntime.InferenceSession(
            str(directory / FAST_MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # a missing, partial or foreign file: all mean "use the pipeline"
        raise ModelError(f"{directory}: cannot load the compiled model: {type(exc).__name__}: {exc}") from exc
    _release_free_heap()
    return OnnxScorer(session, layout, info)


def _release_free_heap() -> None:
    """Give the heap that building the session freed back to the OS (glibc keeps it otherwise): most of what the
    session took while loading, in every shard process."""
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return
    trim(0)
