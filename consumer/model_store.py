"""The launcher side of the model: resolve MODEL_URI, download the MLflow model once, load it under the trust
rules of its format, and write a prepared directory that shard processes load without mlflow.

Accepted URIs::

    models:/<name>@<alias>       registry alias, resolved to its version first (the alias may move later)
    models:/<name>/<version>     registry version (also models:/<name>/latest and legacy stages)
    models:/m-<model_id>         an MLflow 3 logged model
    runs:/<run_id>/<path>        a model logged in a run
    s3://bucket/.../model        any artifact-store URI mlflow can download; MLFLOW_S3_ENDPOINT_URL is honoured
    /a/local/dir, file:///dir    a directory holding MLmodel

The prepared directory is ``cache_dir/<name>-<version>-<digest>/`` holding ``pipeline.joblib`` and
``model.json`` (see :mod:`consumer.scoring`), plus the compiled fast path ``model.onnx`` + ``fastpath.json``
(:mod:`consumer.fastpath`; compiled once per model version, checked against the pipeline first, and reported as
not compiled, with the reason, for a pipeline that is not DictVectorizer + a tree ensemble). Preparing the same
resolved model again returns the same directory without downloading it. mlflow, skops and cloudpickle are
imported inside functions only.

Trust: a ``skops`` model is loaded trusting exactly the types its MLmodel records in
``flavors.sklearn.skops_trusted_types`` (optionally capped by ``allowed_skops_types``); a file that needs any
other type is refused. ``pickle``/``cloudpickle`` models run code when loaded: they are accepted only with
``allow_pickle=True``, i.e. from a registry or bucket whose writers you trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from consumer import fastpath
from consumer.scoring import METADATA_FILE, PIPELINE_FILE, ModelError, load_prepared, single_threaded

__all__ = ["ModelError", "prepare"]

log = structlog.get_logger(__name__)

_MLMODEL = "MLmodel"
_FORMATS = ("skops", "cloudpickle", "pickle")


@dataclass(frozen=True, slots=True)
class _Source:
    """A resolved MODEL_URI: what to download and what it is. ``version`` is None until the content is hashed."""

    requested: str
    download: str
    uri: str
    name: str | None
    version: str | None
    run_id: str | None
    identity: str
    local: bool = False


def prepare(
    model_uri: str,
    cache_dir: Path,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    allow_pickle: bool = True,
    allowed_skops_types: Collection[str] | None = None,
) -> Path:
    """Prepare ``model_uri`` under ``cache_dir`` and return the prepared directory; reuse it if already there.

    ``tracking_uri``/``registry_uri`` default to mlflow's own resolution (MLFLOW_TRACKING_URI) when None.
    Raise :class:`ModelError`, naming the URI, when the model cannot be found, downloaded, trusted or loaded.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    registry_uri = registry_uri or tracking_uri
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=cache_dir))
    try:
        source = _resolve(model_uri, work / "peek", tracking_uri=tracking_uri, registry_uri=registry_uri)
        target = cache_dir / _directory_name(source)
        if _is_prepared(target):
            log.info("model_prepared_reused", uri=model_uri, version=source.version, path=str(target))
            if fastpath.read_state(target) is None:  # prepared before the fast path existed: compile it now
                scorer = load_prepared(target, prefer_compiled=False)
                _compile(target, scorer.pipeline, scorer.info, [], model_uri)
            return target
        model_dir = _download(source, work / "download", tracking_uri=tracking_uri, registry_uri=registry_uri)
        if source.version is None:
            source = replace(source, version=_content_hash(model_dir))
        mlmodel = _read_mlmodel(model_dir, model_uri)
        pipeline, flavor_format, trusted = _load_pipeline(
            model_dir, mlmodel, model_uri, allow_pickle=allow_pickle, allowed_skops_types=allowed_skops_types
        )
        staging = work / "prepared"
        _write_prepared(staging, pipeline, source, mlmodel, flavor_format, trusted)
        scorer = _check_prepared(staging, pipeline, model_dir, model_uri)
        _compile(staging, pipeline, scorer.info, _input_example(model_dir), model_uri)
        _publish(staging, target)
        log.info("model_prepared", uri=model_uri, version=source.version, format=flavor_format, path=str(target))
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- Resolving a URI -------------------------------------------------------------------------------------------


def _resolve(model_uri: str, peek_dir: Path, *, tracking_uri: str | None, registry_uri: str | None) -> _Source:
    if not model_uri or not model_uri.strip():
        raise ModelError("MODEL_URI is empty")
    scheme = urllib.parse.urlparse(model_uri).scheme
    if scheme == "models":
        return _resolve_models_uri(model_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
    if scheme == "runs":
        return _resolve_runs_uri(model_uri, tracking_uri=tracking_uri)
    if scheme in ("", "file"):
        return _resolve_local(model_uri)
    return _resolve_artifact_uri(model_uri, peek_dir, tracking_uri=tracking_uri, registry_uri=registry_uri)


def _client(tracking_uri: str | None, registry_uri: str | None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def _registry_location(registry_uri: str | None) -> str:
    import mlflow

    return registry_uri or mlflow.get_registry_uri()


def _resolve_models_uri(model_uri: str, *, tracking_uri: str | None, registry_uri: str | None) -> _Source:
    from mlflow.exceptions import MlflowException

    path = model_uri[len("models:") :].lstrip("/")
    parts = path.split("/")
    if not path or len(parts) > 2 or not all(parts):
        raise ModelError(f"{model_uri}: not a models:/ URI (models:/name@alias, models:/name/version)")
    client = _client(tracking_uri, registry_uri)
    try:
        if len(parts) == 1 and "@" not in parts[0]:
            return _resolve_logged_model(model_uri, parts[0], client, tracking_uri=tracking_uri)
        mv = _model_version(model_uri, parts, client)
        version = str(mv.version)
        storage = client.get_model_version_download_uri(mv.name, version)
        if storage.startswith("models:/"):  # MLflow 3 sources are logged models: models:/m-<id>
            storage = client.get_logged_model(storage[len("models:/") :]).artifact_location
    except MlflowException as exc:
        raise ModelError(f"{model_uri}: {exc.message}") from exc
    return _Source(
        requested=model_uri,
        download=storage,
        uri=f"models:/{mv.name}/{version}",
        name=mv.name,
        version=version,
        run_id=mv.run_id or None,
        identity=f"registry|{_registry_location(registry_uri)}|{mv.name}|{version}|{storage}",
    )


def _model_version(model_uri: str, parts: list[str], client: Any) -> Any:
    """The registry's ModelVersion for name@alias, name/<version>, name/latest or name/<stage>."""
    if len(parts) == 1:
        name, alias = parts[0].rsplit("@", 1)
        if not name or not alias:
            raise ModelError(f"{model_uri}: not a models:/name@alias URI")
        return client.get_model_version_by_alias(name, alias)
    name, suffix = parts
    if suffix.isdigit():
        return client.get_model_version(name, suffix)
    if suffix.lower() == "latest":
        latest = client.search_model_versions(f"name = '{name}'")
    else:  # a legacy stage (Production, Staging): deprecated in MLflow, still served by the registry
        latest = client.get_latest_versions(name, stages=[suffix])
    if not latest:
        raise ModelError(f"{model_uri}: registered model {name!r} has no version for {suffix!r}")
    return max(latest, key=lambda version: int(version.version))


def _resolve_logged_model(model_uri: str, model_id: str, client: Any, *, tracking_uri: str | None) -> _Source:
    """``models:/m-<id>``: not a registry version, so the version is its run id (or the model id)."""
    import mlflow

    logged = client.get_logged_model(model_id)
    run_id = logged.source_run_id or None
    return _Source(
        requested=model_uri,
        download=logged.artifact_location,
        uri=model_uri,
        name=logged.name,
        version=run_id or model_id,
        run_id=run_id,
        identity=f"logged-model|{tracking_uri or mlflow.get_tracking_uri()}|{model_id}",
    )


def _resolve_runs_uri(model_uri: str, *, tracking_uri: str | None) -> _Source:
    """``runs:/<run_id>/<name>``: an MLflow 3 logged model of that name from the run, else (MLflow 2 layout)
    the run's artifact directory ``<name>``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    match = re.fullmatch(r"runs:/+([^/]+)/(.+?)/*", model_uri)
    if match is None:
        raise ModelError(f"{model_uri}: not a runs:/<run_id>/<path> URI")
    run_id, artifact_path = match.groups()
    client = _client(tracking_uri, None)
    try:
        run = client.get_run(run_id)
        logged = client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"name = '{artifact_path}'"
        )
    except MlflowException as exc:
        raise ModelError(f"{model_uri}: {exc.message}") from exc
    matched = [model.artifact_location for model in logged if model.source_run_id == run_id]
    storage = matched[-1] if matched else f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
    uri = f"runs:/{run_id}/{artifact_path}"
    return _Source(
        requested=model_uri,
        download=storage,
        uri=uri,
        name=None,
        version=run_id,
        run_id=run_id,
        identity=f"run|{tracking_uri or mlflow.get_tracking_uri()}|{run_id}|{artifact_path}|{storage}",
    )


def _resolve_local(model_uri: str) -> _Source:
    path = Path(urllib.parse.urlparse(model_uri).path if model_uri.startswith("file:") else model_uri)
    path = path.expanduser().resolve()
    if not (path / _MLMODEL).is_file():
        raise ModelError(f"{model_uri}: no such MLflow model directory (expected {path / _MLMODEL})")
    run_id = _read_mlmodel(path, model_uri).get("run_id") or None
    digest = _content_hash(path)
    return _Source(
        requested=model_uri,
        download=str(path),
        uri=str(path),
        name=None,
        version=run_id or digest,
        run_id=run_id,
        identity=f"dir|{path}|{digest}",
        local=True,
    )


def _resolve_artifact_uri(
    model_uri: str, peek_dir: Path, *, tracking_uri: str | None, registry_uri: str | None
) -> _Source:
    """s3:// and other artifact stores: read MLmodel alone first, so a prepared model is reused without
    downloading the rest. The version is MLmodel's run_id (the seed's s3://.../<run_id>/artifacts/model form)."""
    uri = model_uri.rstrip("/")
    mlmodel_path = _fetch(
        f"{uri}/{_MLMODEL}", peek_dir, model_uri, tracking_uri=tracking_uri, registry_uri=registry_uri
    )
    mlmodel = _parse_mlmodel(Path(mlmodel_path), model_uri)
    run_id = mlmodel.get("run_id") or None
    stamp = mlmodel.get("model_uuid") or hashlib.sha256(Path(mlmodel_path).read_bytes()).hexdigest()
    return _Source(
        requested=model_uri,
        download=uri,
        uri=uri,
        name=None,
        version=run_id,
        run_id=run_id,
        identity=f"artifact|{uri}|{stamp}",
    )


# --- Downloading and reading ------------------------------------------------------------------------------------


def _fetch(uri: str, dst: Path, model_uri: str, *, tracking_uri: str | None, registry_uri: str | None) -> str:
    import mlflow.artifacts

    dst.mkdir(parents=True, exist_ok=True)
    try:
        return mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri, registry_uri=registry_uri
        )
    except Exception as exc:  # mlflow, botocore and OSError failures all mean the same here
        raise ModelError(f"{model_uri}: cannot download {uri}: {type(exc).__name__}: {exc}") from exc


def _download(source: _Source, dst: Path, *, tracking_uri: str | None, registry_uri: str | None) -> Path:
    if source.local:
        return Path(source.download)  # a local directory is read in place
    path = Path(_fetch(source.download, dst, source.requested, tracking_uri=tracking_uri, registry_uri=registry_uri))
    if not (path / _MLMODEL).is_file():
        raise ModelError(f"{source.requested}: downloaded {source.download}, but it holds no {_MLMODEL} file")
    return path


def _parse_mlmodel(path: Path, model_uri: str) -> dict[str, Any]:
    import yaml

    try:
        mlmodel = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{model_uri}: cannot read {_MLMODEL}: {exc}") from exc
    if not isinstance(mlmodel, dict):
        raise ModelError(f"{model_uri}: {_MLMODEL} is not a mapping")
    return mlmodel


def _read_mlmodel(model_dir: Path, model_uri: str) -> dict[str, Any]:
    return _parse_mlmodel(model_dir / _MLMODEL, model_uri)


def _content_hash(directory: Path) -> str:
    """``sha256-<12 hex>`` over every file's relative path and bytes: the version of a bare directory."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return f"sha256-{digest.hexdigest()[:12]}"


# --- Loading under the format's trust rules ---------------------------------------------------------------------


def _load_pipeline(
    model_dir: Path,
    mlmodel: dict[str, Any],
    model_uri: str,
    *,
    allow_pickle: bool,
    allowed_skops_types: Collection[str] | None,
) -> tuple[Any, str, list[str]]:
    """Return ``(pipeline, serialization_format, trusted_types)``."""
    flavor = (mlmodel.get("flavors") or {}).get("sklearn")
    if not isinstance(flavor, dict):
        flavors = sorted(mlmodel.get("flavors") or {})
        raise ModelError(f"{model_uri}: {_MLMODEL} has no sklearn flavor (flavors: {flavors})")
    fmt = flavor.get("serialization_format") or "pickle"  # MLflow < 2.x wrote no format: pickle
    if fmt not in _FORMATS:
        raise ModelError(f"{model_uri}: unknown sklearn serialization_format {fmt!r}")
    data = model_dir / str(flavor.get("pickled_model") or "")
    if not flavor.get("pickled_model") or not data.is_file():
        raise ModelError(f"{model_uri}: the sklearn flavor's model file {flavor.get('pickled_model')!r} is missing")
    if fmt == "skops":
        trusted = _skops_trust(flavor, data, model_uri, allowed_skops_types)
        pipeline = _load_skops(data, trusted, model_uri)
    else:
        if not allow_pickle:
            raise ModelError(f"{model_uri}: the model is in {fmt} format, which runs code when loaded; refused")
        trusted = []
        pipeline = _load_pickle(data, fmt, model_uri)
    if not callable(getattr(pipeline, "predict", None)):
        raise ModelError(f"{model_uri}: the sklearn flavor holds a {type(pipeline).__name__}, which has no predict()")
    return single_threaded(pipeline), fmt, trusted


def _skops_trust(flavor: dict[str, Any], data: Path, model_uri: str, allowed: Collection[str] | None) -> list[str]:
    """The types to trust: exactly those MLmodel records, if they cover everything the file needs."""
    import skops.io

    recorded = flavor.get("skops_trusted_types") or []
    if not isinstance(recorded, list) or not all(isinstance(name, str) for name in recorded):
        raise ModelError(f"{model_uri}: skops_trusted_types in {_MLMODEL} is not a list of type names: {recorded!r}")
    if allowed is not None and (beyond := sorted(set(recorded) - set(allowed))):
        raise ModelError(f"{model_uri}: {_MLMODEL} trusts skops types this service does not allow: {beyond}")
    try:
        needed = skops.io.get_untrusted_types(file=data)
    except Exception as exc:  # a corrupt or foreign file
        raise ModelError(f"{model_uri}: {data.name} is not a readable skops file: {type(exc).__name__}: {exc}") from exc
    if untrusted := sorted(set(needed) - set(recorded)):
        raise ModelError(
            f"{model_uri}: {data.name} needs types that {_MLMODEL} does not trust: {untrusted}"
            f" (trusted: {sorted(recorded)}); refusing to load it"
        )
    return list(recorded)


def _load_skops(data: Path, trusted: list[str], model_uri: str) -> Any:
    import skops.io

    try:
        return skops.io.load(data, trusted=trusted)
    except Exception as exc:
        raise ModelError(f"{model_uri}: cannot load {data.name} with skops: {type(exc).__name__}: {exc}") from exc


def _load_pickle(data: Path, fmt: str, model_uri: str) -> Any:
    import pickle

    import cloudpickle

    loader = cloudpickle if fmt == "cloudpickle" else pickle
    try:
        with data.open("rb") as handle:
            return loader.load(handle)
    except Exception as exc:
        raise ModelError(f"{model_uri}: cannot load {data.name} with {fmt}: {type(exc).__name__}: {exc}") from exc


# --- Writing the prepared directory -----------------------------------------------------------------------------


def _directory_name(source: _Source) -> str:
    digest = hashlib.sha256(source.identity.encode()).hexdigest()[:12]
    label = f"{source.name or 'model'}-{source.version or 'unversioned'}"
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', label)[:80]}-{digest}"


def _is_prepared(path: Path) -> bool:
    return (path / METADATA_FILE).is_file() and (path / PIPELINE_FILE).is_file()


def _write_prepared(
    staging: Path, pipeline: Any, source: _Source, mlmodel: dict[str, Any], fmt: str, trusted: list[str]
) -> None:
    import joblib
    import sklearn

    staging.mkdir(parents=True)
    joblib.dump(pipeline, staging / PIPELINE_FILE)
    metadata = {
        "uri": source.uri,
        "name": source.name,
        "version": source.version,
        "run_id": source.run_id or mlmodel.get("run_id") or None,
        "flavor_format": fmt,
        "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sklearn_version": sklearn.__version__,
        "logged_sklearn_version": (mlmodel.get("flavors") or {}).get("sklearn", {}).get("sklearn_version"),
        "skops_trusted_types": trusted,
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


def _check_prepared(staging: Path, pipeline: Any, model_dir: Path, model_uri: str) -> Any:
    """Load the prepared pipeline the way a shard will and return that scorer; if MLflow saved an input example
    (a list of feature dicts), the prepared pipeline must predict exactly what the loaded one does."""
    import numpy as np

    scorer = load_prepared(staging, prefer_compiled=False)
    example = _input_example(model_dir)
    if example and not np.array_equal(scorer.pipeline.predict(example), pipeline.predict(example)):
        raise ModelError(f"{model_uri}: the prepared pipeline predicts differently from the MLflow model")
    return scorer


def _compile(directory: Path, pipeline: Any, info: Any, heldout: list[dict[str, Any]], model_uri: str) -> None:
    """The fast path for this model version (:func:`consumer.fastpath.compile_into`), logged either way."""
    state = fastpath.compile_into(directory, pipeline, info, heldout)
    if state.compiled:
        log.info(
            "model_compiled",
            uri=model_uri,
            model_path=fastpath.MODEL_PATH_ONNX,
            estimator=state.estimator,
            used_features=state.used_features,
            vectorizer_features=state.vectorizer_features,
            probe_rows=state.probe_rows,
            max_abs_diff_minutes=state.probe_max_abs_diff,
            seconds=state.compile_seconds,
        )
    else:
        log.warning("model_not_compiled", uri=model_uri, model_path=fastpath.MODEL_PATH_SKLEARN, reason=state.reason)


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
