"""model_store.prepare from every MODEL_URI form, in both serialization formats, against a real (small) model.

The reference is what MLflow itself predicts for the same rides (pyfunc and the sklearn flavor)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from consumer.model.features import features
from consumer.model.prepare import ModelError, prepare
from consumer.model.prepared import FAST_METADATA_FILE, FAST_MODEL_FILE, METADATA_FILE, PIPELINE_FILE, TOLERANCE_MINUTES
from consumer.model.scorer import load_prepared
from consumer.model.trust import DEFAULT_TRUSTED_TYPES
from tests.support.models import TRIPS

REPO = Path(__file__).resolve().parents[2]
FORMS = ("alias", "version", "runs", "logged-model", "local-dir", "s3")

pytestmark = pytest.mark.usefixtures("mlflow_isolation", "trips_file")


def uri_of(form: str, trained, request) -> str:
    result = trained.result
    if form == "alias":
        return f"models:/{result.name}@{result.alias}"
    if form == "version":
        return f"models:/{result.name}/{result.version}"
    if form == "runs":
        return f"runs:/{result.run_id}/model"
    if form == "logged-model":
        return result.logged_model_uri
    if form == "local-dir":
        return str(trained.model_dir)
    upload = request.getfixturevalue("upload")  # the seed's layout: s3://bucket/<experiment>/<run_id>/artifacts/model
    return upload(trained.model_dir, f"models-{result.serialization_format}", f"1/{result.run_id}/artifacts/model")


@pytest.fixture(scope="session")
def mlflow_predictions(trained, rides) -> dict[str, np.ndarray]:
    """What MLflow predicts for ``rides`` with the logged model, through pyfunc and through the sklearn flavor."""
    import mlflow.pyfunc
    import mlflow.sklearn

    rows = [features(ride) for ride in rides]
    return {
        "pyfunc": np.asarray(mlflow.pyfunc.load_model(str(trained.model_dir)).predict(rows)),
        "sklearn": np.asarray(mlflow.sklearn.load_model(str(trained.model_dir)).predict(rows)),
    }


def prepare_in(trained, uri: str, cache_dir: Path, **options) -> Path:
    """Prepare as the launcher does; the cloudpickle model with ALLOW_PICKLE_MODELS=true (refused otherwise)."""
    options.setdefault("allow_pickle", trained.result.serialization_format == "cloudpickle")
    return prepare(uri, cache_dir, tracking_uri=trained.store.tracking_uri, **options)


@pytest.mark.parametrize("form", FORMS)
def test_prepared_scorer_predicts_exactly_what_mlflow_predicts(
    form, trained, rides, mlflow_predictions, tmp_path, request
):
    uri = uri_of(form, trained, request)
    path = prepare_in(trained, uri, tmp_path)

    scorer = load_prepared(path, prefer_compiled=False)
    compiled = load_prepared(path)

    predictions = scorer.predict(rides)
    assert predictions.shape == (len(rides),)
    assert np.abs(predictions - mlflow_predictions["pyfunc"]).max() <= 1e-9
    assert np.abs(predictions - mlflow_predictions["sklearn"]).max() <= 1e-9
    assert compiled.path == "onnx"
    assert np.abs(compiled.predict(rides) - mlflow_predictions["pyfunc"]).max() <= TOLERANCE_MINUTES
    registry_form = form in ("alias", "version")
    assert scorer.info.version == (trained.result.version if registry_form else trained.result.run_id)
    assert scorer.info.run_id == trained.result.run_id


@pytest.mark.parametrize("form", ["alias", "version"])
def test_model_json_records_the_registry_version_behind_the_uri(form, trained, tmp_path, request):
    path = prepare_in(trained, uri_of(form, trained, request), tmp_path)

    metadata = json.loads((path / METADATA_FILE).read_text())
    result = trained.result
    assert metadata["uri"] == f"models:/{result.name}/{result.version}"
    assert metadata["name"] == result.name
    assert metadata["version"] == result.version == "1"
    assert metadata["run_id"] == result.run_id
    assert metadata["flavor_format"] == result.serialization_format
    assert {"prepared_at", "sklearn_version"} <= metadata.keys()
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [METADATA_FILE, PIPELINE_FILE, FAST_MODEL_FILE, FAST_METADATA_FILE]
    )


def test_skops_model_is_loaded_trusting_exactly_the_types_its_mlmodel_records(trained_skops, tmp_path):
    path = prepare_in(trained_skops, str(trained_skops.model_dir), tmp_path)

    recorded = yaml.safe_load((trained_skops.model_dir / "MLmodel").read_text())["flavors"]["sklearn"]
    assert recorded["serialization_format"] == "skops"
    assert recorded["skops_trusted_types"] == ["sklearn.tree._tree.Tree"]
    assert json.loads((path / METADATA_FILE).read_text())["skops_trusted_types"] == ["sklearn.tree._tree.Tree"]


def test_prepared_pipeline_scores_single_threaded(trained, tmp_path):
    scorer = load_prepared(prepare_in(trained, trained.result.model_uri, tmp_path), prefer_compiled=False)

    assert scorer.pipeline.steps[-1][1].n_jobs == 1


def test_preparing_again_reuses_the_prepared_directory(trained, tmp_path):
    uri = f"models:/{trained.result.name}@{trained.result.alias}"
    first = prepare_in(trained, uri, tmp_path)
    written = (first / PIPELINE_FILE).stat().st_mtime_ns, (first / METADATA_FILE).read_text()

    second = prepare_in(trained, uri, tmp_path)
    by_version = prepare_in(trained, trained.result.model_uri, tmp_path)

    assert second == by_version == first
    assert ((first / PIPELINE_FILE).stat().st_mtime_ns, (first / METADATA_FILE).read_text()) == written
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no download leftovers


def test_s3_model_prepared_again_is_reused_without_downloading_the_model_file(trained_skops, upload, s3, tmp_path):
    run_id = trained_skops.result.run_id
    uri = upload(trained_skops.model_dir, "reuse", f"1/{run_id}/artifacts/model")
    first = prepare(uri, tmp_path)
    s3.delete_object(Bucket="reuse", Key=f"1/{run_id}/artifacts/model/model.skops")

    assert prepare(uri, tmp_path) == first
    assert load_prepared(first).info.version == run_id


def test_alias_moved_to_a_new_version_prepares_that_version(trained_skops, tmp_path):
    from mlflow import MlflowClient

    store = trained_skops.store
    client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    # A storage path as the source (MLflow 2 style): a models:/m-<id> source is looked up through mlflow's global
    # tracking URI, not this client's.
    source = str(trained_skops.model_dir)
    client.create_registered_model("ride-duration-moving")
    for _ in range(2):
        client.create_model_version("ride-duration-moving", source=source, run_id=trained_skops.result.run_id)
    client.set_registered_model_alias("ride-duration-moving", "production", "1")
    before = prepare("models:/ride-duration-moving@production", tmp_path, tracking_uri=store.tracking_uri)

    client.set_registered_model_alias("ride-duration-moving", "production", "2")
    after = prepare("models:/ride-duration-moving@production", tmp_path, tracking_uri=store.tracking_uri)

    assert after != before
    assert load_prepared(before).info.version == "1"
    assert load_prepared(after).info.version == "2"


def _copy_with_mlmodel(model_dir: Path, destination: Path, edit) -> Path:
    shutil.copytree(model_dir, destination)
    mlmodel = yaml.safe_load((destination / "MLmodel").read_text())
    edit(mlmodel)
    (destination / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return destination


def test_skops_model_needing_a_type_its_mlmodel_does_not_trust_is_refused(trained_skops, tmp_path):
    def untrust(mlmodel):
        mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = None

    model = _copy_with_mlmodel(trained_skops.model_dir, tmp_path / "model", untrust)

    with pytest.raises(ModelError, match=r"sklearn\.tree\._tree\.Tree") as raised:
        prepare(str(model), tmp_path / "cache")
    assert str(model) in str(raised.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_tampered_skops_file_with_a_foreign_type_is_refused(trained_skops, tmp_path):
    import skops.io
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    model = tmp_path / "model"
    shutil.copytree(trained_skops.model_dir, model)
    skops.io.dump(make_pipeline(FunctionTransformer(func=os.system), DictVectorizer()), model / "model.skops")

    with pytest.raises(ModelError, match=r"posix\.system.*refusing to load"):
        prepare(str(model), tmp_path / "cache")


def test_skops_types_its_mlmodel_lists_beyond_the_allow_list_are_refused(trained_skops, tmp_path):
    allowed = [name for name in DEFAULT_TRUSTED_TYPES if name != "sklearn.tree._tree.Tree"]
    pattern = r"MLmodel trusts skops types outside MODEL_TRUSTED_TYPES: \['sklearn\.tree\._tree\.Tree'\]"
    with pytest.raises(ModelError, match=pattern):
        prepare_in(trained_skops, trained_skops.result.model_uri, tmp_path, trusted_types=allowed)


def test_a_type_listed_in_mlmodel_is_not_trusted_on_its_word(trained_skops, tmp_path):
    def trust_more(mlmodel):
        mlmodel["flavors"]["sklearn"]["skops_trusted_types"] += ["builtins.exec"]

    model = _copy_with_mlmodel(trained_skops.model_dir, tmp_path / "model", trust_more)

    with pytest.raises(ModelError, match=r"outside MODEL_TRUSTED_TYPES: \['builtins\.exec'\]"):
        prepare(str(model), tmp_path / "cache")


@pytest.fixture(scope="module")
def expm1_model(tmp_path_factory) -> Path:
    """The fault suite's fragile model, small: a FunctionTransformer(numpy.expm1) between the vectorizer and the
    forest, its MLmodel trusting numpy.expm1, a type outside the default allow-list (skops itself trusts numpy's
    ufuncs: the file needs only the trees')."""
    import mlflow.sklearn
    from sklearn.pipeline import make_pipeline as sk_make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from consumer.tools.training import SKOPS_TRUSTED_TYPES, feature_rows, make_pipeline, read_trips

    trips = read_trips(str(TRIPS)).sample(2_000, random_state=0)
    trips = trips[trips["trip_distance"] < 60]
    vectorizer, forest = (step for _, step in make_pipeline(n_estimators=3, n_jobs=1).steps)
    pipeline = sk_make_pipeline(vectorizer, FunctionTransformer(np.expm1, accept_sparse=True), forest)
    pipeline.fit(feature_rows(trips), trips["duration"].to_numpy())
    directory = tmp_path_factory.mktemp("expm1") / "model"
    mlflow.sklearn.save_model(
        pipeline, directory, serialization_format="skops", skops_trusted_types=[*SKOPS_TRUSTED_TYPES, "numpy.expm1"]
    )
    return directory


def test_a_skops_model_needing_a_type_outside_the_allow_list_is_refused_naming_it_and_the_setting(
    expm1_model, tmp_path
):
    with pytest.raises(ModelError) as raised:
        prepare(str(expm1_model), tmp_path / "cache")

    message = str(raised.value)
    assert message.startswith(f"{expm1_model}: ")
    assert "outside MODEL_TRUSTED_TYPES: ['numpy.expm1']" in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_skops_model_needing_a_type_the_operator_allows_is_prepared(expm1_model, tmp_path):
    path = prepare(str(expm1_model), tmp_path, trusted_types=[*DEFAULT_TRUSTED_TYPES, "numpy.expm1"])

    assert json.loads((path / METADATA_FILE).read_text())["skops_trusted_types"] == ["sklearn.tree._tree.Tree"]
    assert load_prepared(path).path == "sklearn"  # three steps: not compiled


def test_a_cloudpickle_model_is_refused_by_default_naming_it_and_the_setting(trained_cloudpickle, tmp_path):
    uri = trained_cloudpickle.result.model_uri
    with pytest.raises(ModelError, match=rf"^{uri}: the model is in cloudpickle format.*ALLOW_PICKLE_MODELS=true"):
        prepare(uri, tmp_path, tracking_uri=trained_cloudpickle.store.tracking_uri)
    assert list(tmp_path.iterdir()) == []


def test_a_cloudpickle_model_is_prepared_when_the_operator_allows_pickle(trained_cloudpickle, tmp_path):
    uri = trained_cloudpickle.result.model_uri
    path = prepare(uri, tmp_path, tracking_uri=trained_cloudpickle.store.tracking_uri, allow_pickle=True)

    assert json.loads((path / METADATA_FILE).read_text())["flavor_format"] == "cloudpickle"


def test_a_cache_prepared_under_other_library_versions_is_not_reused(trained_skops, tmp_path, monkeypatch):
    from consumer.model import prepare as preparing

    uri = trained_skops.result.model_uri
    first = prepare_in(trained_skops, uri, tmp_path)
    recorded = json.loads((first / METADATA_FILE).read_text())["prepared_with"]
    assert recorded == preparing.loader_versions()
    assert {"format", "python", "scikit-learn", "numpy", "joblib", "onnxruntime", "skl2onnx", "onnx"} <= set(recorded)

    for name, other in (("scikit-learn", "0.24.2"), ("onnxruntime", "1.10.0"), ("format", "1"), ("python", "3.10")):
        upgraded = {**recorded, name: other}
        monkeypatch.setattr(preparing, "loader_versions", lambda upgraded=upgraded: upgraded)
        again = prepare_in(trained_skops, uri, tmp_path / name)
        assert again.name != first.name, name
        assert json.loads((again / METADATA_FILE).read_text())["prepared_with"] == upgraded

    monkeypatch.setattr(preparing, "loader_versions", lambda: recorded)
    assert prepare_in(trained_skops, uri, tmp_path) == first


def test_model_without_a_sklearn_flavor_is_refused(trained_skops, tmp_path):
    def pyfunc_only(mlmodel):
        del mlmodel["flavors"]["sklearn"]

    model = _copy_with_mlmodel(trained_skops.model_dir, tmp_path / "model", pyfunc_only)

    with pytest.raises(ModelError, match=r"has no sklearn flavor \(flavors: \['python_function'\]\)"):
        prepare(str(model), tmp_path / "cache")


@pytest.mark.parametrize(
    "uri",
    [
        "models:/no-such-model@production",
        "models:/ride-duration-skops@no-such-alias",
        "models:/ride-duration-skops/99",
        "models:/",
        "runs:/0123456789abcdef0123456789abcdef/model",
        "runs:/only-a-run-id",
        "/no/such/model/dir",
        "",
    ],
)
def test_bad_uri_raises_model_error_naming_it(uri, trained_skops, tmp_path):
    with pytest.raises(ModelError) as raised:
        prepare_in(trained_skops, uri, tmp_path)
    assert (uri or "MODEL_URI is empty") in str(raised.value)


def test_missing_s3_model_raises_model_error_naming_it(s3, tmp_path):
    s3.create_bucket(Bucket="empty")
    for uri in ("s3://empty/1/abc/artifacts/model", "s3://no-such-bucket/model"):
        with pytest.raises(ModelError, match=f"{uri}: cannot download"):
            prepare(uri, tmp_path)


def test_prepared_model_loads_in_a_fresh_process_without_importing_mlflow(trained, rides, tmp_path):
    path = prepare_in(trained, trained.result.model_uri, tmp_path)
    fields = [[r.ride_id, r.pu_location_id, r.do_location_id, r.trip_distance] for r in rides]
    code = f"""
import json, sys
from consumer.pipeline.events import Ride
from consumer.model.scorer import load_prepared
scorer = load_prepared({str(path)!r})
rides = [Ride(*fields) for fields in json.loads({json.dumps(fields)!r})]
predictions = scorer.predict(rides).tolist()
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "mlflow")
print(json.dumps({{"mlflow": loaded, "version": scorer.info.version, "predictions": predictions}}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )

    out = json.loads(done.stdout)
    assert out["mlflow"] == []
    assert out["version"] == trained.result.version
    assert np.abs(np.asarray(out["predictions"]) - load_prepared(path).predict(rides)).max() <= 1e-9


def test_prepared_directory_from_another_sklearn_version_is_refused(trained_skops, tmp_path):
    path = prepare_in(trained_skops, trained_skops.result.model_uri, tmp_path)
    metadata = json.loads((path / METADATA_FILE).read_text())
    (path / METADATA_FILE).write_text(json.dumps({**metadata, "sklearn_version": "0.24.2"}))

    with pytest.raises(ModelError, match=r"prepared with scikit-learn 0\.24\.2"):
        load_prepared(path, prefer_compiled=False)


def test_directory_that_was_not_prepared_is_refused(tmp_path):
    with pytest.raises(ModelError, match=rf"{tmp_path}: no model\.json"):
        load_prepared(tmp_path)


def test_a_model_that_cannot_score_ordinary_rides_is_refused(tmp_path):
    """The probe rides a shard asks when its model fails on a whole batch must score when the model is prepared."""
    import mlflow.sklearn
    from sklearn.dummy import DummyRegressor
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(DictVectorizer(), DummyRegressor()).fit([{"PU_DO": "1_2", "trip_distance": 1.0}], [5.0])
    pipeline.steps[-1][1].constant_[:] = np.nan  # a model that answers NaN whatever the ride
    mlflow.sklearn.save_model(pipeline, tmp_path / "model", serialization_format="skops")

    with pytest.raises(ModelError, match=r"model: the model does not give one finite duration per ride"):
        prepare(str(tmp_path / "model"), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
