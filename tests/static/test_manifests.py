"""The Kubernetes manifests (k8s/) and the ECS task definition (ecs/): valid against their schemas, checkov clean
but for the findings accepted below, and consistent with the code they deploy (settings, ports, grace periods)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import botocore.session
import kubernetes_validate
import pytest
import yaml
from botocore.validate import ParamValidator

from consumer.errors import SettingsError
from consumer.runtime.daemon import parse_properties
from consumer.runtime.settings import ServingSettings, load_serving_settings, load_settings
from consumer.runtime.supervision import KILL_MARGIN_SECONDS
from tests.static.conftest import K8S, REPO, checkov, manifest, manifests, settings_configmap, task_definition
from tests.support.requirements import require_tool

#: The oldest Kubernetes minor still in EKS's support window when this was written, and the newest known schema.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())

#: Findings of checkov on k8s/ that are accepted, with why. The test fails if one disappears, so none is stale.
CHECKOV_ACCEPTED = {
    # "The default namespace should not be used": the manifests name no namespace on purpose; it is chosen where
    # they are applied (`kubectl -n NAME apply -f k8s/`, or `namespace:` in a Kustomize overlay).
    "CKV_K8S_21",
    # "Image should use digest": a digest exists only after the image is built and pushed; overlays set it with the
    # Kustomization's `images: [{name: ..., digest: sha256:...}]` (see k8s/Kustomization).
    "CKV_K8S_43",
}

#: Custom resources, checked against models generated from their CRDs' schemas (tools/static/Pipfile).
CRD_MODELS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "cloudcoil.models.prometheus_operator.v1:PodMonitor",
    ("keda.sh/v1alpha1", "ScaledObject"): "cloudcoil.models.keda.v1alpha1:ScaledObject",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "cloudcoil.models.keda.v1alpha1:TriggerAuthentication",
}
OPTIONAL_FOLDERS = (K8S / "monitoring", K8S / "keda")
#: The web endpoint (`python -m consumer serve`): its own Deployment, Service, identity and settings.
WEB = K8S / "web"


def clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        monkeypatch.delenv(key)


def properties_grace_seconds() -> float:
    properties = parse_properties((REPO / "properties" / "consumer.properties").read_text())
    return int(properties["shutdownGraceMillis"]) / 1000


# ------------------------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_manifests_are_valid_kubernetes_objects_with_no_unknown_field(version):
    objects = manifests()
    assert {obj["kind"] for obj in objects} == {
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
    }
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_web_manifests_are_valid_kubernetes_objects_with_no_unknown_field(version):
    objects = manifests(WEB)
    assert sorted(obj["kind"] for obj in objects) == sorted(
        ["ServiceAccount", "ConfigMap", "Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget"]
    )
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_custom_resources_match_their_crd_schemas(static_tools):
    """pydantic models generated from the CRDs; a field the schema does not know is reported, not dropped."""
    documents = [obj for folder in OPTIONAL_FOLDERS for obj in manifests(folder)]
    assert {(obj["apiVersion"], obj["kind"]) for obj in documents} == set(CRD_MODELS)
    script = """
import importlib, json, sys
documents, models = json.load(sys.stdin)
problems = []
for document in documents:
    module, name = models[document["apiVersion"] + " " + document["kind"]].split(":")
    model = getattr(importlib.import_module(module), name)
    parsed = model.model_validate(document).model_dump(by_alias=True, exclude_unset=True, mode="json")

    def dropped(given, kept, path):
        if isinstance(given, dict):
            for key, value in given.items():
                if not isinstance(kept, dict) or key not in kept:
                    problems.append(f"{document['kind']}: unknown field {path}{key}")
                else:
                    dropped(value, kept[key], f"{path}{key}.")
        elif isinstance(given, list):
            for index, (value, other) in enumerate(zip(given, kept)):
                dropped(value, other, f"{path}{index}.")

    dropped(document, parsed, "")
print(json.dumps(problems))
"""
    models = {f"{api} {kind}": target for (api, kind), target in CRD_MODELS.items()}
    result = subprocess.run(
        [static_tools / "python", "-c", script],
        input=json.dumps([documents, models]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == []


def test_a_misspelt_field_in_a_custom_resource_is_caught(static_tools, tmp_path, monkeypatch):
    """The check above can fail: a PodMonitor with `intervall` instead of `interval` is reported."""
    folder = tmp_path / "monitoring"
    folder.mkdir()
    text = (K8S / "monitoring" / "podmonitor.yaml").read_text().replace("interval:", "intervall:")
    (folder / "podmonitor.yaml").write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "OPTIONAL_FOLDERS", (folder, K8S / "keda"))
    with pytest.raises(AssertionError, match=r"unknown field spec\.podMetricsEndpoints\.0\.intervall"):
        test_custom_resources_match_their_crd_schemas(static_tools)


def test_ecs_task_definition_is_a_valid_register_task_definition_request():
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    report = ParamValidator().validate(task_definition(), shape)
    assert not report.has_errors(), report.generate_report()


# ------------------------------------------------------------------------------------------------ checkov


def test_manifests_pass_checkov_but_for_the_accepted_findings(static_tools):
    report = checkov(static_tools, "kubernetes", "--directory", str(K8S))
    failed = {check["check_id"] for check in report["results"]["failed_checks"]}
    assert failed == CHECKOV_ACCEPTED, [
        (check["check_id"], check["check_name"], check["resource"]) for check in report["results"]["failed_checks"]
    ]
    assert report["summary"]["parsing_errors"] == 0


# ------------------------------------------------------------------------------------------------ layout


def test_kubectl_apply_f_reads_only_kubernetes_objects():
    """`kubectl apply -f k8s/` reads every *.yaml of the folder: no Kustomization object may be among them (the
    kustomize entry points are named `Kustomization`), and every document has an apiVersion and a kind."""
    for folder in (K8S, *OPTIONAL_FOLDERS, WEB):
        for path in folder.glob("*.y*ml"):
            for document in yaml.safe_load_all(path.read_text()):
                assert document["apiVersion"] and document["kind"] != "Kustomization", path


@pytest.mark.parametrize("folder", [K8S, *OPTIONAL_FOLDERS, WEB], ids=lambda path: path.name)
def test_each_kustomization_lists_exactly_the_manifests_of_its_folder(folder):
    kustomization = yaml.safe_load((folder / "Kustomization").read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in folder.glob("*.yaml"))


@pytest.mark.parametrize("folder", [K8S, *OPTIONAL_FOLDERS, WEB], ids=lambda path: path.name)
def test_kustomize_builds_the_same_objects_as_apply_f(folder):
    kubectl = require_tool("kubectl", "install kubectl (its built-in kustomize renders the folders)")
    built = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True).stdout
    names = sorted((obj["kind"], obj["metadata"]["name"]) for obj in yaml.safe_load_all(built) if obj)
    assert names == sorted((obj["kind"], obj["metadata"]["name"]) for obj in manifests(folder))


# ------------------------------------------------------------------------------------------------ consistency


def test_configmap_settings_start_the_consumer(monkeypatch):
    """Every key is a setting and every value passes the settings' own validation."""
    clear_environment(monkeypatch)
    for key, value in settings_configmap().items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert (
        settings.metrics_port
        == manifest("Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    )


def test_ecs_environment_is_the_configmap_apart_from_the_tracking_server(monkeypatch):
    environment = {item["name"]: item["value"] for item in task_definition()["containerDefinitions"][0]["environment"]}
    configmap = settings_configmap()
    # Kubernetes mounts its properties template from a ConfigMap; ECS runs the image's own.
    configmap.pop("KCL_PROPERTIES_TEMPLATE")
    assert environment.keys() == configmap.keys()
    assert {key for key in configmap if environment[key] != configmap[key]} == {"MLFLOW_TRACKING_URI"}
    clear_environment(monkeypatch)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    try:
        load_settings()
    except SettingsError as exc:  # pragma: no cover - the assertion message is the point
        pytest.fail(str(exc))


def test_kcl_properties_configmap_is_the_repository_template():
    mounted = manifest("ConfigMap", "ride-duration-consumer-kcl")["data"]["consumer.properties"]
    assert mounted == (REPO / "properties" / "consumer.properties").read_text(), (
        "copy properties/consumer.properties into k8s/configmap.yaml (ride-duration-consumer-kcl)"
    )
    container = manifest("Deployment")["spec"]["template"]["spec"]["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "kcl-properties")
    settings = manifest("ConfigMap", "ride-duration-consumer-settings")["data"]
    assert Path(settings["KCL_PROPERTIES_TEMPLATE"]) == Path(mount["mountPath"]) / "consumer.properties"


def test_stop_grace_outlasts_the_daemons_drain_and_the_launchers_kill_margin():
    """Kubernetes and ECS must not SIGKILL the launcher before its own stop: the daemon's shutdownGraceMillis for
    the processors' last batch and checkpoint, plus the launcher's margin before it kills the daemon."""
    needed = properties_grace_seconds() + KILL_MARGIN_SECONDS
    assert properties_grace_seconds() == 20
    assert manifest("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > needed
    stop_timeout = task_definition()["containerDefinitions"][0]["stopTimeout"]
    assert needed < stop_timeout <= 120  # Fargate's maximum


def test_deployment_pods_are_their_own_worker_id_probed_on_healthz_and_readyz_and_locked_down():
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    worker_id = next(item for item in container["env"] if item["name"] == "KCL_WORKER_ID")
    assert worker_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert pod["serviceAccountName"] == manifest("ServiceAccount")["metadata"]["name"]
    role = manifest("ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role == task_definition()["taskRoleArn"]


def test_service_pod_monitor_pdb_and_scaler_point_at_the_consumer_pods():
    deployment = manifest("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {port["name"] for port in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert manifest("Service")["spec"]["selector"].items() <= labels.items()
    assert {port["targetPort"] for port in manifest("Service")["spec"]["ports"]} <= port_names
    assert manifest("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod_monitor = manifest("PodMonitor", folder=K8S / "monitoring")["spec"]
    assert pod_monitor["selector"]["matchLabels"].items() <= labels.items()
    assert {endpoint["port"] for endpoint in pod_monitor["podMetricsEndpoints"]} <= port_names
    scaler = manifest("ScaledObject", folder=K8S / "keda")["spec"]
    assert scaler["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = scaler["triggers"]
    assert trigger["metadata"]["streamName"] == settings_configmap()["INPUT_STREAM_NAME"]
    assert trigger["metadata"]["awsRegion"] == settings_configmap()["AWS_REGION"]


def test_the_fargate_task_gets_at_least_the_pods_memory_limit():
    limit = manifest("Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), "write the memory limit in Mi"
    assert int(task_definition()["memory"]) >= int(limit.removesuffix("Mi"))


# ------------------------------------------------------------------------------------------------ the web endpoint


def test_web_settings_start_serve_on_the_containers_port(monkeypatch):
    """Every key is a setting of `serve` (or MLflow's own variable) and every value passes its validation."""
    clear_environment(monkeypatch)
    settings = manifest("ConfigMap", folder=WEB)["data"]
    known = {name.upper() for name in ServingSettings.model_fields} | {"AWS_REGION", "MLFLOW_TRACKING_URI"}
    assert set(settings) <= known
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    serving = load_serving_settings()
    container = manifest("Deployment", folder=WEB)["spec"]["template"]["spec"]["containers"][0]
    assert serving.serve_port == container["ports"][0]["containerPort"]
    assert serving.model_uri == settings_configmap()["MODEL_URI"], "the web endpoint serves the consumer's model"


def test_web_deployment_runs_serve_from_the_consumers_image_with_its_probes_and_security():
    pod = manifest("Deployment", folder=WEB)["spec"]["template"]["spec"]
    consumer_pod = manifest("Deployment")["spec"]["template"]["spec"]
    container, consumer = pod["containers"][0], consumer_pod["containers"][0]
    assert container["args"] == ["serve"]
    assert container["image"] == consumer["image"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["securityContext"] == consumer["securityContext"]
    assert pod["securityContext"] == consumer_pod["securityContext"]
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/tmp"} | {
        mount["mountPath"] for mount in consumer["volumeMounts"] if mount["name"] in ("model-cache", "prometheus")
    }
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert pod["serviceAccountName"] == manifest("ServiceAccount", folder=WEB)["metadata"]["name"]
    role = manifest("ServiceAccount", folder=WEB)["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role != manifest("ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]


def test_web_service_pdb_and_network_policy_point_at_the_web_pods_only():
    deployment = manifest("Deployment", folder=WEB)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    consumer_labels = manifest("Deployment")["spec"]["template"]["metadata"]["labels"]
    port_names = {port["name"] for port in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    service = manifest("Service", folder=WEB)["spec"]
    assert service["selector"].items() <= labels.items()
    assert not service["selector"].items() <= consumer_labels.items()
    assert {port["targetPort"] for port in service["ports"]} <= port_names
    assert [port["port"] for port in service["ports"]] == [9696]  # the course's port
    assert manifest("PodDisruptionBudget", folder=WEB)["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policy = manifest("NetworkPolicy", folder=WEB)["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert {port["port"] for rule in policy["ingress"] for port in rule["ports"]} <= port_names


def test_the_benchmark_charges_scrapes_at_the_podmonitors_interval():
    from consumer.tools.bench.limit import SCRAPE_INTERVAL_SECONDS

    podmonitor = yaml.safe_load((K8S / "monitoring" / "podmonitor.yaml").read_text())
    [endpoint] = podmonitor["spec"]["podMetricsEndpoints"]
    assert endpoint["interval"] == f"{SCRAPE_INTERVAL_SECONDS:g}s"
