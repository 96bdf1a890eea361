"""The fast path's compiling side: a DictVectorizer + tree-ensemble pipeline compiled to ONNX, once per model
version, while the model is prepared (:func:`consumer.model.prepare.prepare`).

:func:`compile_into` converts the tree ensemble with skl2onnx, keeps only the vectorizer columns the trees split on
(every other column cannot change a prediction), and checks that the compiled model agrees with the pipeline within
:data:`~consumer.model.prepared.TOLERANCE_MINUTES` on probe rows built from the trees' own split values (every used
category, unseen ones, each numeric threshold and its float32 neighbours) plus any held-out rows the caller has. It
writes ``model.onnx`` and ``fastpath.json`` next to ``pipeline.joblib``. Any other pipeline, or one that disagrees,
is not compiled: ``fastpath.json`` then says why and the shards use the sklearn pipeline
(:mod:`consumer.model.scorer`). scikit-learn's trees cast their input to float32 too, so the comparisons are the
same; ONNX keeps the thresholds as float32 (sklearn as float64), which the probe rows around every threshold check.

This side imports scikit-learn, skl2onnx and onnx; the scoring side (:mod:`consumer.model.fastpath`) needs
onnxruntime and numpy only.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from consumer.errors import ModelError
from consumer.model.fastpath import OnnxScorer, load
from consumer.model.prepared import (
    FAST_METADATA_FILE,
    FAST_MODEL_FILE,
    TOLERANCE_MINUTES,
    FastPathState,
    Layout,
    ModelInfo,
)
from consumer.model.scorer import Predictor

__all__ = [
    "Agreement",
    "Compiled",
    "NotCompilable",
    "agreement",
    "compile_into",
    "compile_layout",
    "compile_pipeline",
    "probe_rows",
]

_PROBE_ROWS = 20_000
_ONNX_OPSET = {"": 17, "ai.onnx.ml": 3}  # TreeEnsembleRegressor of ai.onnx.ml 3: onnxruntime >= 1.10 runs it
_INPUT_NAME = "X"


class NotCompilable(ModelError):
    """The pipeline is not a DictVectorizer followed by a tree ensemble skl2onnx converts, or disagrees."""


@dataclass(frozen=True, slots=True)
class Agreement:
    """How far the compiled model is from the pipeline on the rows checked (minutes)."""

    rows: int
    max_abs_diff: float

    @property
    def within_tolerance(self) -> bool:
        return self.max_abs_diff <= TOLERANCE_MINUTES


@dataclass(frozen=True, slots=True)
class Compiled:
    """An ONNX model over the used columns and the layout that feeds it."""

    onnx_model: bytes
    layout: Layout
    estimator: str
    vectorizer_features: int


def _parts(pipeline: Any) -> tuple[Any, Any]:
    """(DictVectorizer, tree ensemble) or NotCompilable saying what the pipeline is instead."""
    from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeRegressor, ExtraTreeRegressor

    trees = (
        RandomForestRegressor,
        ExtraTreesRegressor,
        GradientBoostingRegressor,
        DecisionTreeRegressor,
        ExtraTreeRegressor,
    )
    steps = [step for _, step in pipeline.steps] if isinstance(pipeline, Pipeline) else [pipeline]
    steps = [step for step in steps if step not in (None, "passthrough")]
    names = [type(step).__name__ for step in steps]
    if len(steps) != 2 or not isinstance(steps[0], DictVectorizer) or type(steps[1]) not in trees:
        raise NotCompilable(f"not DictVectorizer + a tree ensemble regressor: {' -> '.join(names)}")
    if getattr(steps[1], "n_outputs_", 1) != 1:
        raise NotCompilable(f"{names[1]} has {steps[1].n_outputs_} outputs; one duration is expected")
    return steps[0], steps[1]


def _trees(estimator: Any) -> list[Any]:
    if hasattr(estimator, "tree_"):
        return [estimator.tree_]
    return [tree.tree_ for tree in np.ravel(estimator.estimators_)]


def _used_columns(estimator: Any) -> list[int]:
    return sorted({int(f) for tree in _trees(estimator) for f in tree.feature if f >= 0})


def compile_pipeline(pipeline: Predictor) -> Compiled:
    """Convert the pipeline's tree ensemble to ONNX over the columns its trees use. Raise NotCompilable."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    vectorizer, estimator = _parts(pipeline)
    names = list(vectorizer.feature_names_)
    used = _used_columns(estimator)
    compact = {column: position for position, column in enumerate(used)}
    try:
        model = convert_sklearn(
            estimator, initial_types=[(_INPUT_NAME, FloatTensorType([None, len(names)]))], target_opset=_ONNX_OPSET
        )
    except Exception as exc:  # skl2onnx raises many kinds; each means "not this one"
        raise NotCompilable(f"skl2onnx cannot convert {type(estimator).__name__}: {type(exc).__name__}: {exc}") from exc
    nodes = list(model.graph.node)
    if [node.op_type for node in nodes] != ["TreeEnsembleRegressor"]:
        raise NotCompilable(f"unexpected ONNX graph {[node.op_type for node in nodes]}")
    attributes = {attribute.name: attribute for attribute in nodes[0].attribute}
    modes = [mode.decode() for mode in attributes["nodes_modes"].strings]
    feature_ids = attributes["nodes_featureids"].ints
    remapped = [0 if mode == "LEAF" else compact[int(f)] for f, mode in zip(feature_ids, modes, strict=True)]
    del feature_ids[:]
    feature_ids.extend(remapped)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = max(len(used), 1)
    onnx.checker.check_model(model)

    layout = compile_layout(vectorizer, estimator)
    return Compiled(model.SerializeToString(), layout, type(estimator).__name__, len(names))


def _thresholds(estimator: Any) -> dict[int, npt.NDArray[np.float64]]:
    found: dict[int, list[float]] = {}
    for tree in _trees(estimator):
        for feature, threshold in zip(tree.feature, tree.threshold, strict=True):
            if feature >= 0:
                found.setdefault(int(feature), []).append(float(threshold))
    return {column: np.unique(np.asarray(values)) for column, values in found.items()}


def probe_rows(pipeline: Predictor, count: int = _PROBE_ROWS, seed: int = 0) -> list[dict[str, Any]]:
    """Feature dicts that exercise every split of the trees: each used category and an unseen one, and each
    numeric threshold exactly, at its float32 rounding and at the float32 values on either side."""
    vectorizer, estimator = _parts(pipeline)
    compiled_layout = compile_layout(vectorizer, estimator)
    rng = np.random.default_rng(seed)
    categories: dict[str, list[str]] = {}
    for name in compiled_layout.onehot:
        key, _, value = name.partition(compiled_layout.separator)
        categories.setdefault(key, []).append(value)
    thresholds = _thresholds(estimator)
    numbers: dict[str, npt.NDArray[np.float64]] = {}
    for name in compiled_layout.numeric:
        split = thresholds.get(vectorizer.vocabulary_[name], np.zeros(1))
        as32 = split.astype(np.float32)
        candidates = np.concatenate(
            [
                split,
                as32.astype(np.float64),
                np.nextafter(as32, np.float32(np.inf)).astype(np.float64),
                np.nextafter(as32, np.float32(-np.inf)).astype(np.float64),
                rng.uniform(split.min() - 1, split.max() + 1, size=len(split)),
            ]
        )
        numbers[name] = candidates
    rows: list[dict[str, Any]] = []
    for _ in range(count):
        row: dict[str, Any] = {}
        for key, values in categories.items():
            pick = int(rng.integers(len(values) + 1))
            row[key] = values[pick] if pick < len(values) else "__never_seen__"
        for name, candidates in numbers.items():
            row[name] = float(candidates[int(rng.integers(len(candidates)))])
        rows.append(row)
    return rows


def compile_layout(vectorizer: Any, estimator: Any) -> Layout:
    """The input layout :func:`compile_pipeline` builds, without converting (for probes)."""
    names = list(vectorizer.feature_names_)
    used = _used_columns(estimator)
    compact = {column: position for position, column in enumerate(used)}
    onehot: dict[str, int] = {}
    numeric: dict[str, int] = {}
    for column in used:
        name = names[column]
        key, sep, _ = name.partition(vectorizer.separator)
        (onehot if sep and key else numeric)[name] = compact[column]
    return Layout(separator=vectorizer.separator, onehot=onehot, numeric=numeric, width=max(len(used), 1))


def agreement(pipeline: Predictor, scorer: OnnxScorer, rows: Sequence[Mapping[str, Any]]) -> Agreement:
    """Largest absolute difference between the pipeline and the compiled model on ``rows`` (minutes)."""
    if not rows:
        return Agreement(0, 0.0)
    expected = np.asarray(pipeline.predict(list(rows)), dtype=np.float64)
    got = scorer.predict_rows(rows)
    return Agreement(len(rows), float(np.max(np.abs(got - expected))))


def compile_into(
    directory: Path, pipeline: Predictor, info: ModelInfo, heldout_rows: Iterable[Mapping[str, Any]] = ()
) -> FastPathState:
    """Compile ``pipeline`` into the prepared ``directory`` and check it; write ``fastpath.json`` either way.

    The compiled model is kept only if it agrees within :data:`TOLERANCE_MINUTES` on the probe rows and on
    ``heldout_rows``. Returns the state written (``compiled`` False with the reason otherwise). Compiling is an
    optimisation of a pipeline that already works: a converter that fails in any way (or is not installed) leaves
    the pipeline in charge, with the failure as the reason, rather than stopping the service.
    """
    directory = Path(directory)
    started = time.perf_counter()
    heldout = list(heldout_rows)
    try:
        compiled = compile_pipeline(pipeline)
        _write_bytes(directory / FAST_MODEL_FILE, compiled.onnx_model)
        _write_json(directory / FAST_METADATA_FILE, {"compiled": True, "layout": asdict(compiled.layout)})
        scorer = load(directory, info)
        probes = agreement(pipeline, scorer, probe_rows(pipeline))
        checked = agreement(pipeline, scorer, heldout)
        if not (probes.within_tolerance and checked.within_tolerance):
            worst = max(probes.max_abs_diff, checked.max_abs_diff)
            raise NotCompilable(f"compiled model differs by up to {worst:.3g} minutes (> {TOLERANCE_MINUTES:g})")
    except Exception as exc:  # noqa: BLE001 - see the docstring: every failure means "score with the pipeline"
        (directory / FAST_MODEL_FILE).unlink(missing_ok=True)
        reason = str(exc) if isinstance(exc, NotCompilable) else f"compilation failed: {type(exc).__name__}: {exc}"
        state = FastPathState(compiled=False, reason=reason)
        _write_json(directory / FAST_METADATA_FILE, asdict(state))
        return state
    state = FastPathState(
        compiled=True,
        estimator=compiled.estimator,
        vectorizer_features=compiled.vectorizer_features,
        used_features=len(compiled.layout.onehot) + len(compiled.layout.numeric),
        probe_rows=probes.rows,
        probe_max_abs_diff=probes.max_abs_diff,
        heldout_rows=checked.rows,
        heldout_max_abs_diff=checked.max_abs_diff if heldout else None,
        compile_seconds=round(time.perf_counter() - started, 2),
        versions=_versions(),
    )
    _write_json(directory / FAST_METADATA_FILE, {**asdict(state), "layout": asdict(compiled.layout)})
    return state


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("scikit-learn", "skl2onnx", "onnx", "onnxruntime")}


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` atomically: a reader sees the old file or the whole new one."""
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    _write_bytes(path, (json.dumps(value, indent=2) + "\n").encode("utf-8"))
