"""Resolving MODEL_URI: which model it names, where its files are, and what version the events will carry.

Accepted URIs::

    models:/<name>@<alias>       registry alias, resolved to its version first (the alias may move later)
    models:/<name>/<version>     registry version (also models:/<name>/latest and legacy stages)
    models:/m-<model_id>         an MLflow 3 logged model
    runs:/<run_id>/<path>        a model logged in a run
    s3://bucket/.../model        any artifact-store URI mlflow can download; MLFLOW_S3_ENDPOINT_URL is honoured
    /a/local/dir, file:///dir    a directory holding MLmodel

:func:`resolve` returns a :class:`Source`; :func:`download` fetches its files. mlflow is imported inside
functions only.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.errors import ModelError

if TYPE_CHECKING:  # mlflow is imported inside functions only
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = ["MLMODEL", "Source", "content_hash", "download", "parse_mlmodel", "read_mlmodel", "resolve"]

MLMODEL = "MLmodel"


@dataclass(frozen=True, slots=True)
class Source:
    """A resolved MODEL_URI: what to download and what it is. ``version`` is None until the content is hashed."""

    requested: str
    download: str
    uri: str
    name: str | None
    version: str | None
    run_id: str | None
    identity: str
    local: bool = False


def resolve(model_uri: str, peek_dir: Path, *, tracking_uri: str | None, registry_uri: str | None) -> Source:
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


def _client(tracking_uri: str | None, registry_uri: str | None) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def _registry_location(registry_uri: str | None) -> str:
    import mlflow

    return registry_uri or mlflow.get_registry_uri()


def _resolve_models_uri(model_uri: str, *, tracking_uri: str | None, registry_uri: str | None) -> Source:
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
    return Source(
        requested=model_uri,
        download=storage,
        uri=f"models:/{mv.name}/{version}",
        name=mv.name,
        version=version,
        run_id=mv.run_id or None,
        identity=f"registry|{_registry_location(registry_uri)}|{mv.name}|{version}|{storage}",
    )


def _model_version(model_uri: str, parts: list[str], client: MlflowClient) -> ModelVersion:
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


def _resolve_logged_model(model_uri: str, model_id: str, client: MlflowClient, *, tracking_uri: str | None) -> Source:
    """``models:/m-<id>``: not a registry version, so the version is its run id (or the model id)."""
    import mlflow

    logged = client.get_logged_model(model_id)
    run_id = logged.source_run_id or None
    return Source(
        requested=model_uri,
        download=logged.artifact_location,
        uri=model_uri,
        name=logged.name,
        version=run_id or model_id,
        run_id=run_id,
        identity=f"logged-model|{tracking_uri or mlflow.get_tracking_uri()}|{model_id}",
    )


def _resolve_runs_uri(model_uri: str, *, tracking_uri: str | None) -> Source:
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
    return Source(
        requested=model_uri,
        download=storage,
        uri=uri,
        name=None,
        version=run_id,
        run_id=run_id,
        identity=f"run|{tracking_uri or mlflow.get_tracking_uri()}|{run_id}|{artifact_path}|{storage}",
    )


def _resolve_local(model_uri: str) -> Source:
    path = Path(urllib.parse.urlparse(model_uri).path if model_uri.startswith("file:") else model_uri)
    path = path.expanduser().resolve()
    if not (path / MLMODEL).is_file():
        raise ModelError(f"{model_uri}: no such MLflow model directory (expected {path / MLMODEL})")
    run_id = read_mlmodel(path, model_uri).get("run_id") or None
    digest = content_hash(path)
    return Source(
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
) -> Source:
    """s3:// and other artifact stores: read MLmodel alone first, so a prepared model is reused without
    downloading the rest. The version is MLmodel's run_id (the seed's s3://.../<run_id>/artifacts/model form)."""
    uri = model_uri.rstrip("/")
    mlmodel_path = _fetch(f"{uri}/{MLMODEL}", peek_dir, model_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
    mlmodel = parse_mlmodel(Path(mlmodel_path), model_uri)
    run_id = mlmodel.get("run_id") or None
    stamp = mlmodel.get("model_uuid") or hashlib.sha256(Path(mlmodel_path).read_bytes()).hexdigest()
    return Source(
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


def download(source: Source, dst: Path, *, tracking_uri: str | None, registry_uri: str | None) -> Path:
    if source.local:
        return Path(source.download)  # a local directory is read in place
    path = Path(_fetch(source.download, dst, source.requested, tracking_uri=tracking_uri, registry_uri=registry_uri))
    if not (path / MLMODEL).is_file():
        raise ModelError(f"{source.requested}: downloaded {source.download}, but it holds no {MLMODEL} file")
    return path


def parse_mlmodel(path: Path, model_uri: str) -> dict[str, Any]:
    import yaml

    try:
        mlmodel = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{model_uri}: cannot read {MLMODEL}: {exc}") from exc
    if not isinstance(mlmodel, dict):
        raise ModelError(f"{model_uri}: {MLMODEL} is not a mapping")
    return mlmodel


def read_mlmodel(model_dir: Path, model_uri: str) -> dict[str, Any]:
    return parse_mlmodel(model_dir / MLMODEL, model_uri)


def content_hash(directory: Path) -> str:
    """``sha256-<12 hex>`` over every file's relative path and bytes: the version of a bare directory."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return f"sha256-{digest.hexdigest()[:12]}"
