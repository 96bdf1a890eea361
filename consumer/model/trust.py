"""Loading an MLflow sklearn model under the trust rules of its serialization format.

A ``skops`` model is loaded trusting exactly the types its MLmodel records in
``flavors.sklearn.skops_trusted_types`` (optionally capped by ``allowed_skops_types``); a file that needs any other
type is refused. ``pickle``/``cloudpickle`` models run code when loaded: they are accepted only with
``allow_pickle=True``, i.e. from a registry or bucket whose writers you trust.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from consumer.errors import ModelError
from consumer.model.resolve import MLMODEL
from consumer.model.scorer import Predictor, single_threaded

__all__ = ["FORMATS", "load_pipeline"]

FORMATS = ("skops", "cloudpickle", "pickle")


def load_pipeline(
    model_dir: Path,
    mlmodel: dict[str, Any],
    model_uri: str,
    *,
    allow_pickle: bool,
    allowed_skops_types: Collection[str] | None,
) -> tuple[Predictor, str, list[str]]:
    """Return ``(pipeline, serialization_format, trusted_types)``."""
    flavor = (mlmodel.get("flavors") or {}).get("sklearn")
    if not isinstance(flavor, dict):
        flavors = sorted(mlmodel.get("flavors") or {})
        raise ModelError(f"{model_uri}: {MLMODEL} has no sklearn flavor (flavors: {flavors})")
    fmt = flavor.get("serialization_format") or "pickle"  # MLflow < 2.x wrote no format: pickle
    if fmt not in FORMATS:
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
        raise ModelError(f"{model_uri}: skops_trusted_types in {MLMODEL} is not a list of type names: {recorded!r}")
    if allowed is not None and (beyond := sorted(set(recorded) - set(allowed))):
        raise ModelError(f"{model_uri}: {MLMODEL} trusts skops types this service does not allow: {beyond}")
    try:
        needed = skops.io.get_untrusted_types(file=data)
    except Exception as exc:  # a corrupt or foreign file
        raise ModelError(f"{model_uri}: {data.name} is not a readable skops file: {type(exc).__name__}: {exc}") from exc
    if untrusted := sorted(set(needed) - set(recorded)):
        raise ModelError(
            f"{model_uri}: {data.name} needs types that {MLMODEL} does not trust: {untrusted}"
            f" (trusted: {sorted(recorded)}); refusing to load it"
        )
    return list(recorded)


def _load_skops(data: Path, trusted: list[str], model_uri: str) -> Any:  # whatever the file holds
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
