"""The model the benchmark scores with, prepared as the launcher prepares it, and the **model** section: the
compiled fast path against the sklearn pipeline on every held-out ride."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.tools.bench.config import BenchConfig, say
from consumer.tools.bench.rides import Rides

__all__ = ["BenchModel", "bench_model", "model_section"]


@dataclass(frozen=True)
class BenchModel:
    uri: str
    tracking_uri: str
    prepared: Path  # with the compiled fast path
    prepared_sklearn: Path  # the same without it: shards score with the pipeline


def bench_model(config: BenchConfig, trips: str) -> BenchModel:
    """A small model (quick) or the demo's, prepared twice: with the fast path and without it."""
    from consumer.model.prepare import prepare
    from consumer.tools.harness import ensure_model
    from consumer.tools.paths import LOCAL_DIR
    from consumer.tools.training import local_store, train

    if config.small_model:
        tracking_uri, artifacts = local_store(config.work_dir / "mlflow")
        say("training a small model (20 trees on 20,000 trips)")
        result = train(trips, tracking_uri=tracking_uri, artifact_location=artifacts, sample=20_000, n_estimators=20)
        uri = result.model_uri
    else:
        say("the demo's model (100 trees on January 2022, trained into .local/mlflow if missing)")
        uri = ensure_model(LOCAL_DIR / "mlflow", trips)
        tracking_uri, _ = local_store(LOCAL_DIR / "mlflow")
    prepared = prepare(uri, config.work_dir / "model-cache", tracking_uri=tracking_uri)
    plain = config.work_dir / "model-sklearn"
    plain.mkdir(parents=True, exist_ok=True)
    for name in ("pipeline.joblib", "model.json"):
        shutil.copy(prepared / name, plain / name)
    return BenchModel(uri, tracking_uri, prepared, plain)


def model_section(model: BenchModel, rides: Rides) -> dict[str, Any]:
    import joblib

    from consumer.model.compile import agreement as measure_agreement
    from consumer.model.fastpath import OnnxScorer
    from consumer.model.prepared import TOLERANCE_MINUTES, read_state
    from consumer.model.scorer import load_prepared

    state = read_state(model.prepared)
    pipeline = joblib.load(model.prepared / "pipeline.joblib")
    compiled = load_prepared(model.prepared)
    section: dict[str, Any] = {
        "uri": model.uri,
        "version": compiled.info.version,
        "estimator": type(pipeline.steps[-1][1]).__name__,
        "model_path": compiled.path,
        "compiled": bool(state and state.compiled),
        "reason": state.reason if state else "no fastpath.json",
    }
    if isinstance(compiled, OnnxScorer) and state is not None:
        agreement = measure_agreement(pipeline, compiled, rides.rows)
        section.update(
            used_features=state.used_features,
            vectorizer_features=state.vectorizer_features,
            compile_seconds=state.compile_seconds,
            agreement={
                "rides": agreement.rows,
                "max_abs_diff_minutes": agreement.max_abs_diff,
                "tolerance_minutes": TOLERANCE_MINUTES,
                "probe_rows": state.probe_rows,
                "probe_max_abs_diff_minutes": state.probe_max_abs_diff,
            },
        )
    return section
