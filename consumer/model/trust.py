"""Loading an MLflow sklearn model under the trust rules of its serialization format.

A model file is code as much as data: whoever can write to the registry or the bucket decides what a consumer pod
runs when it loads one. So the operator, not the model, says what is trusted:

- ``pickle``/``cloudpickle`` models run any code when loaded: refused unless ``allow_pickle`` (the setting
  ``ALLOW_PICKLE_MODELS=true``), i.e. the operator trusts every writer of the registry or the bucket;
- a ``skops`` model loads only if every type its file needs beyond skops' own defaults
  (``skops.io.get_untrusted_types``) is in the operator's allow-list (``MODEL_TRUSTED_TYPES``, by default
  :data:`DEFAULT_TRUSTED_TYPES`). The types the MLmodel file lists (``skops_trusted_types``) are checked against the
  same allow-list and never trusted on their own word; a file that needs a type its MLmodel does not list is
  refused too (MLflow itself would not load it).

Every refusal is a :class:`~consumer.errors.ModelError` naming the model URI, the setting, and the types outside
the allow-list. This module imports the standard library only at import time (the settings read its default).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.errors import ModelError
from consumer.model.resolve import MLMODEL

if TYPE_CHECKING:
    from consumer.model.scorer import Predictor

__all__ = ["DEFAULT_TRUSTED_TYPES", "FORMATS", "load_pipeline"]

FORMATS = ("skops", "cloudpickle", "pickle")

#: What a skops file of a DictVectorizer followed by one of scikit-learn's tree ensemble regressors (random forest,
#: extra trees, gradient boosting, a decision tree or an extra tree) in a Pipeline contains, beyond builtins: the
#: estimators, the trees' node arrays (``Tree``, which skops does not trust by default: its arrays are indexed
#: without bounds checks), and what gradient boosting keeps (its initial estimator, loss, link, random state).
#: skops trusts most of these itself today; listing them keeps the model family allowed if its defaults shrink.
DEFAULT_TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.pipeline.Pipeline",
    "sklearn.feature_extraction._dict_vectorizer.DictVectorizer",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._forest.ExtraTreesRegressor",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._classes.ExtraTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.dummy.DummyRegressor",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.loss.AbsoluteError",
    "sklearn._loss.loss.HuberLoss",
    "sklearn._loss.loss.PinballLoss",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn._loss._loss.CyAbsoluteError",
    "sklearn._loss._loss.CyHuberLoss",
    "sklearn._loss._loss.CyPinballLoss",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "numpy.ndarray",
    "numpy.float64",
    "numpy.random.mtrand.RandomState",
)

_ALLOW_LIST = "MODEL_TRUSTED_TYPES"
_ALLOW_PICKLE = "ALLOW_PICKLE_MODELS"


def load_pipeline(
    model_dir: Path,
    mlmodel: dict[str, Any],
    model_uri: str,
    *,
    allow_pickle: bool,
    trusted_types: Collection[str],
) -> tuple[Predictor, str, list[str]]:
    """Return ``(pipeline, serialization_format, skops types trusted to load it)``; raise ModelError."""
    from consumer.model.scorer import single_threaded

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
        trusted = _skops_trust(flavor, data, model_uri, trusted_types)
        pipeline = _load_skops(data, trusted, model_uri)
    else:
        if not allow_pickle:
            raise ModelError(
                f"{model_uri}: the model is in {fmt} format, which runs code when it is loaded; refused. Log it"
                f" with skops (MLflow's default), or set {_ALLOW_PICKLE}=true if you trust everyone who can write"
                " to its registry or bucket"
            )
        trusted = []
        pipeline = _load_pickle(data, fmt, model_uri)
    if not callable(getattr(pipeline, "predict", None)):
        raise ModelError(f"{model_uri}: the sklearn flavor holds a {type(pipeline).__name__}, which has no predict()")
    return single_threaded(pipeline), fmt, trusted


def _skops_trust(flavor: dict[str, Any], data: Path, model_uri: str, allowed: Collection[str]) -> list[str]:
    """The types to trust: those the file needs, if the allow-list has them all and MLmodel lists them."""
    import skops.io

    recorded = flavor.get("skops_trusted_types") or []
    if not isinstance(recorded, list) or not all(isinstance(name, str) for name in recorded):
        raise ModelError(f"{model_uri}: skops_trusted_types in {MLMODEL} is not a list of type names: {recorded!r}")
    if beyond := sorted(set(recorded) - set(allowed)):
        raise ModelError(
            f"{model_uri}: {MLMODEL} trusts skops types outside {_ALLOW_LIST}: {beyond}; refusing to load it"
            f" (add them to {_ALLOW_LIST} only if you trust whoever wrote the model)"
        )
    try:
        needed = sorted(skops.io.get_untrusted_types(file=data))
    except Exception as exc:  # a corrupt or foreign file
        raise ModelError(f"{model_uri}: {data.name} is not a readable skops file: {type(exc).__name__}: {exc}") from exc
    if beyond := sorted(set(needed) - set(allowed)):
        raise ModelError(
            f"{model_uri}: {data.name} needs skops types outside {_ALLOW_LIST}: {beyond}; refusing to load it"
            f" (add them to {_ALLOW_LIST} only if you trust whoever wrote the model)"
        )
    if unlisted := sorted(set(needed) - set(recorded)):
        raise ModelError(
            f"{model_uri}: {data.name} needs types that its {MLMODEL} does not trust: {unlisted}"
            f" (trusted: {sorted(recorded)}); refusing to load it"
        )
    return needed


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
