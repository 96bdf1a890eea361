"""The prepared-model directory: the contract between the side that prepares a model (:mod:`consumer.model.prepare`,
with MLflow) and the processes that score with it (:mod:`consumer.model.scorer`, without MLflow).

A prepared directory holds:

- ``pipeline.joblib``: the scikit-learn pipeline, serialized with joblib by this very image;
- ``model.json``: where it came from (:class:`ModelInfo` and provenance), written before the directory is published;
- ``model.onnx`` + ``fastpath.json``: the compiled fast path (:mod:`consumer.model.compile`), or ``fastpath.json``
  alone saying why the pipeline was not compiled.

Only the standard library is imported here: every shard process reads these files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict, cast

from consumer.errors import ModelError

__all__ = [
    "FAST_METADATA_FILE",
    "FAST_MODEL_FILE",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "MODEL_PATH_ONNX",
    "MODEL_PATH_SKLEARN",
    "PIPELINE_FILE",
    "TOLERANCE_MINUTES",
    "FastPathState",
    "Layout",
    "ModelInfo",
    "PreparedMetadata",
    "model_info",
    "read_layout",
    "read_metadata",
    "read_state",
    "scoring_path",
]

#: The layout of a prepared directory; part of its identity (:func:`consumer.model.prepare.loader_versions`), so a
#: directory of another layout is prepared again rather than reused. Raise it when the files or their meaning change.
FORMAT_VERSION = 2
#: The pipeline inside a prepared directory, serialized with joblib.
PIPELINE_FILE = "pipeline.joblib"
#: What the pipeline is: {"uri", "name", "version", "run_id", "flavor_format", "prepared_at", "sklearn_version", ...}.
METADATA_FILE = "model.json"
#: The compiled model (ONNX, ai.onnx.ml TreeEnsembleRegressor over the used columns).
FAST_MODEL_FILE = "model.onnx"
#: What was compiled (or why not): the column layout, the agreement measured, versions. Written last.
FAST_METADATA_FILE = "fastpath.json"
#: A compiled model is used only if no checked row differs from the pipeline by more than this (minutes).
TOLERANCE_MINUTES = 1e-3
#: The two values of the ``model_path`` label in logs and metrics.
MODEL_PATH_ONNX = "onnx"
MODEL_PATH_SKLEARN = "sklearn"


class PreparedMetadata(TypedDict):
    """``model.json``: ``uri`` and ``version`` are checked when it is read; the rest is provenance."""

    uri: str
    version: str
    name: NotRequired[str | None]
    run_id: NotRequired[str | None]
    flavor_format: NotRequired[str]
    prepared_at: NotRequired[str]  # ISO 8601
    sklearn_version: NotRequired[str]  # the scikit-learn that wrote pipeline.joblib
    logged_sklearn_version: NotRequired[str | None]  # the one MLflow logged the model with
    skops_trusted_types: NotRequired[list[str]]
    prepared_with: NotRequired[dict[str, str]]  # the format and the versions in the directory's identity


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Which model scores. ``version`` is what prediction events carry: the registry version when the model
    came from the registry, else the MLflow run id, else a content hash."""

    uri: str
    name: str | None
    version: str
    run_id: str | None


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each used feature goes in the compiled model's input row."""

    separator: str
    onehot: Mapping[str, int]  # "PU_DO=130_205" -> column
    numeric: Mapping[str, int]  # "trip_distance" -> column
    width: int


@dataclass(frozen=True, slots=True)
class FastPathState:
    """``fastpath.json``: ``compiled`` tells a shard which path to take; ``reason`` says why not when it is not."""

    compiled: bool
    reason: str | None = None
    estimator: str | None = None
    vectorizer_features: int | None = None
    used_features: int | None = None
    probe_rows: int | None = None
    probe_max_abs_diff: float | None = None
    heldout_rows: int | None = None
    heldout_max_abs_diff: float | None = None
    tolerance: float = TOLERANCE_MINUTES
    compile_seconds: float | None = None
    versions: Mapping[str, str] | None = None


def read_metadata(path: Path) -> PreparedMetadata:
    """``model.json`` of a prepared directory; :class:`ModelError` when it is missing, unreadable or incomplete."""
    try:
        metadata = json.loads((Path(path) / METADATA_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: no {METADATA_FILE}; is this a prepared model directory?") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read {METADATA_FILE}: {exc}") from exc
    if not isinstance(metadata, dict) or not metadata.get("version") or not metadata.get("uri"):
        raise ModelError(f"{path}: {METADATA_FILE} has no uri or version")
    return cast(PreparedMetadata, metadata)  # a JSON object with uri and version: the rest is read with .get()


def model_info(metadata: PreparedMetadata) -> ModelInfo:
    """The :class:`ModelInfo` recorded in ``model.json``."""
    return ModelInfo(
        uri=str(metadata["uri"]),
        name=metadata.get("name"),
        version=str(metadata["version"]),
        run_id=metadata.get("run_id"),
    )


def read_state(directory: Path) -> FastPathState | None:
    """``fastpath.json`` of a prepared directory, or None if it has none (prepared before the fast path)."""
    try:
        raw = json.loads((Path(directory) / FAST_METADATA_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{directory}: cannot read {FAST_METADATA_FILE}: {exc}") from exc
    known = set(FastPathState.__slots__)
    return FastPathState(**{key: value for key, value in raw.items() if key in known and key != "layout"})


def read_layout(directory: Path) -> Layout:
    """The compiled model's input layout from ``fastpath.json``."""
    raw = json.loads((Path(directory) / FAST_METADATA_FILE).read_text(encoding="utf-8"))
    return Layout(**raw["layout"])


def scoring_path(directory: Path) -> str:
    """``onnx`` when the prepared directory has a compiled fast path, else ``sklearn``: what its shards will load."""
    state = read_state(directory)
    return MODEL_PATH_ONNX if state is not None and state.compiled else MODEL_PATH_SKLEARN
