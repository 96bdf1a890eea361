"""Preparing a model: resolve MODEL_URI, download the MLflow model once, load it under the trust rules of its format
(:mod:`consumer.model.trust`), check it, compile the fast path, and publish a prepared directory
(:mod:`consumer.model.prepared`) that shard processes load without mlflow.

The prepared directory is ``cache_dir/<name>-<version>-<digest>/``; the digest covers the resolved model and the
versions of what writes and loads the directory (:func:`loader_versions`), so a cache kept across an upgrade of
scikit-learn, onnxruntime or this image's format is prepared again instead of being reused. Preparing the same
resolved model with the same versions returns the same directory without downloading it. The trust settings
(pickle, the skops allow-list) are passed in, never read here. mlflow, skops and cloudpickle are imported inside
functions only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from consumer.errors import ModelError
from consumer.model.compile import compile_into
from consumer.model.features import PROBE_RIDES
from consumer.model.prepared import (
    FORMAT_VERSION,
    METADATA_FILE,
    MODEL_PATH_ONNX,
    MODEL_PATH_SKLEARN,
    PIPELINE_FILE,
    ModelInfo,
    PreparedMetadata,
)
from consumer.model.resolve import Source, content_hash, download, read_mlmodel, resolve
from consumer.model.scorer import Predictor, Scorer, load_prepared
from consumer.model.trust import DEFAULT_TRUSTED_TYPES, load_pipeline

__all__ = ["MLFLOW_TELEMETRY_OFF", "loader_versions", "prepare"]

#: MLflow's own switch for its usage telemetry (mlflow.environment_variables.MLFLOW_DISABLE_TELEMETRY).
MLFLOW_TELEMETRY_OFF = ("MLFLOW_DISABLE_TELEMETRY", "true")
#: The packages that write or read a prepared directory: joblib and scikit-learn (the pipeline), numpy (its arrays),
#: skl2onnx and onnx (the compiled model), onnxruntime (scores it).
LOADERS = ("scikit-learn", "numpy", "joblib", "onnxruntime", "skl2onnx", "onnx")

log = structlog.get_logger(__name__)


def prepare(
    model_uri: str,
    cache_dir: Path,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    allow_pickle: bool = False,
    trusted_types: Collection[str] = DEFAULT_TRUSTED_TYPES,
) -> Path:
    """Prepare ``model_uri`` under ``cache_dir`` and return the prepared directory; reuse it if already there.

    ``tracking_uri``/``registry_uri`` default to mlflow's own resolution (MLFLOW_TRACKING_URI) when None.
    ``allow_pickle`` and ``trusted_types`` are the trust rules (:mod:`consumer.model.trust`; the settings
    ALLOW_PICKLE_MODELS and MODEL_TRUSTED_TYPES). Raise :class:`ModelError`, naming the URI, when the model cannot
    be found, downloaded, trusted or loaded, or cannot score the probe rides
    (:data:`~consumer.model.features.PROBE_RIDES`).
    """
    # MLflow 3 sends usage events to its telemetry service for some calls unless told not to (it stays quiet by
    # itself only under CI or pytest). The service talks to AWS and its tracking server, nothing else; an operator
    # who wants the telemetry sets the variable. Before the first import of mlflow in this process.
    os.environ.setdefault(*MLFLOW_TELEMETRY_OFF)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    registry_uri = registry_uri or tracking_uri
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=cache_dir))
    try:
        source = resolve(model_uri, work / "peek", tracking_uri=tracking_uri, registry_uri=registry_uri)
        versions = loader_versions()
        target = cache_dir / _directory_name(source, versions)
        if _is_prepared(target):
            log.info("model_prepared_reused", uri=model_uri, version=source.version, path=str(target))
            return target
        model_dir = download(source, work / "download", tracking_uri=tracking_uri, registry_uri=registry_uri)
        if source.version is None:
            source = replace(source, version=content_hash(model_dir))
        mlmodel = read_mlmodel(model_dir, model_uri)
        pipeline, flavor_format, trusted = load_pipeline(
            model_dir, mlmodel, model_uri, allow_pickle=allow_pickle, trusted_types=trusted_types
        )
        staging = work / "prepared"
        _write_prepared(staging, pipeline, source, mlmodel, flavor_format, trusted, versions)
        scorer = _check_prepared(staging, pipeline, model_dir, model_uri)
        _compile(staging, pipeline, scorer.info, _input_example(model_dir), model_uri)
        _publish(staging, target)
        log.info("model_prepared", uri=model_uri, version=source.version, format=flavor_format, path=str(target))
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def loader_versions() -> dict[str, str]:
    """What the prepared directory's identity includes besides the model: its format, the Python minor version and
    the versions of :data:`LOADERS` ("absent" for one that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "absent"

    return {
        "format": str(FORMAT_VERSION),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        **{package: installed(package) for package in LOADERS},
    }


def _directory_name(source: Source, versions: dict[str, str]) -> str:
    identity = f"{source.identity}|{json.dumps(versions, sort_keys=True)}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    label = f"{source.name or 'model'}-{source.version or 'unversioned'}"
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', label)[:80]}-{digest}"


def _is_prepared(path: Path) -> bool:
    return (path / METADATA_FILE).is_file() and (path / PIPELINE_FILE).is_file()


def _write_prepared(
    staging: Path,
    pipeline: Predictor,
    source: Source,
    mlmodel: dict[str, Any],
    fmt: str,
    trusted: list[str],
    versions: dict[str, str],
) -> None:
    import joblib
    import sklearn

    if source.version is None:  # prepare() sets it from the content hash first; a shard could not load it
        raise ModelError(f"{source.requested}: no version to record in {METADATA_FILE}")
    staging.mkdir(parents=True)
    joblib.dump(pipeline, staging / PIPELINE_FILE)
    metadata: PreparedMetadata = {
        "uri": source.uri,
        "name": source.name,
        "version": source.version,
        "run_id": source.run_id or mlmodel.get("run_id") or None,
        "flavor_format": fmt,
        "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sklearn_version": sklearn.__version__,
        "logged_sklearn_version": (mlmodel.get("flavors") or {}).get("sklearn", {}).get("sklearn_version"),
        "skops_trusted_types": trusted,
        "prepared_with": versions,
    }
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def _input_example(model_dir: Path) -> list[dict[str, Any]]:
    """The input example MLflow saved with the model, if it is a list of feature dicts; else no rows."""
    example_file = model_dir / "input_example.json"
    if not example_file.is_file():
        return []
    example = json.loads(example_file.read_text(encoding="utf-8"))
    if isinstance(example, dict):
        example = [example]
    if not (isinstance(example, list) and example and all(isinstance(row, dict) for row in example)):
        return []
    return example


def _check_prepared(staging: Path, pipeline: Predictor, model_dir: Path, model_uri: str) -> Scorer:
    """Load the prepared pipeline the way a shard will and return that scorer. It must score the probe rides (a
    shard asks them again when the model fails on a whole batch, to tell a broken model from bad rides); if MLflow
    saved an input example (a list of feature dicts), it must predict exactly what the loaded one does."""
    import numpy as np

    scorer = load_prepared(staging, prefer_compiled=False)
    try:
        probed = scorer.predict(PROBE_RIDES)
    except Exception as exc:
        raise ModelError(f"{model_uri}: the model cannot score ordinary rides: {type(exc).__name__}: {exc}") from exc
    if probed.shape != (len(PROBE_RIDES),) or not np.isfinite(probed).all():
        raise ModelError(f"{model_uri}: the model does not give one finite duration per ride: {probed!r:.200}")
    example = _input_example(model_dir)
    if example and not np.array_equal(scorer.pipeline.predict(example), pipeline.predict(example)):
        raise ModelError(f"{model_uri}: the prepared pipeline predicts differently from the MLflow model")
    return scorer


def _compile(
    directory: Path, pipeline: Predictor, info: ModelInfo, heldout: list[dict[str, Any]], model_uri: str
) -> None:
    """The fast path for this model version (:func:`consumer.model.compile.compile_into`), logged either way."""
    state = compile_into(directory, pipeline, info, heldout)
    if state.compiled:
        log.info(
            "model_compiled",
            uri=model_uri,
            model_path=MODEL_PATH_ONNX,
            estimator=state.estimator,
            used_features=state.used_features,
            vectorizer_features=state.vectorizer_features,
            probe_rows=state.probe_rows,
            max_abs_diff_minutes=state.probe_max_abs_diff,
            seconds=state.compile_seconds,
        )
    else:
        log.warning("model_not_compiled", uri=model_uri, model_path=MODEL_PATH_SKLEARN, reason=state.reason)


def _publish(staging: Path, target: Path) -> None:
    """Move the staging directory into place atomically. If another launcher got there first, keep theirs."""
    if target.exists() and not _is_prepared(target):
        log.warning("model_prepared_incomplete_removed", path=str(target))
        shutil.rmtree(target)
    try:
        os.rename(staging, target)
    except OSError:
        if not _is_prepared(target):
            raise
