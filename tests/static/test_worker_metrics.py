"""KCL 3's worker metrics (KCL_WORKER_METRICS) agree with what the Kubernetes and ECS manifests give the pod.

With worker metrics on, the daemon finds its CPU on ECS through the task metadata endpoint (the agent sets
ECS_CONTAINER_METADATA_URI_V4) and on EKS through the pod's cgroup, once the service-account token file
(/var/run/secrets/kubernetes.io/serviceaccount/token) tells it that it runs there. Without either it probes EC2
instance metadata (169.254.169.254). So a manifest that turns worker metrics on must leave the token mounted on
Kubernetes, and must leave the metadata endpoint alone on ECS.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.static.conftest import manifest, settings_configmap, task_definition

TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def _on(value: str | None) -> bool:
    return (value or "false").strip().lower() in {"true", "1", "yes", "on"}


def kubernetes_problems(settings: dict[str, str], deployment: dict[str, Any], account: dict[str, Any]) -> list[str]:
    if "KCL_WORKER_METRICS" not in settings:
        return ["the settings ConfigMap does not say whether worker metrics are on (KCL_WORKER_METRICS)"]
    if not _on(settings["KCL_WORKER_METRICS"]):
        return []
    pod = deployment["spec"]["template"]["spec"]
    # The pod's field wins over the service account's; unset on both means mounted.
    mounted = pod.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True))
    covered = any(
        TOKEN_FILE.startswith(mount["mountPath"].rstrip("/") + "/")
        for container in pod["containers"]
        for mount in container.get("volumeMounts", [])
    )
    if not mounted or covered:
        return [f"KCL_WORKER_METRICS is on but the pod has no {TOKEN_FILE}: the daemon would probe EC2 metadata"]
    return []


def ecs_problems(task: dict[str, Any]) -> list[str]:
    container = task["containerDefinitions"][0]
    environment = {item["name"]: item["value"] for item in container.get("environment", [])}
    if "KCL_WORKER_METRICS" not in environment:
        return ["the task definition does not say whether worker metrics are on (KCL_WORKER_METRICS)"]
    if not _on(environment["KCL_WORKER_METRICS"]):
        return []
    overridden = {"ECS_CONTAINER_METADATA_URI", "ECS_CONTAINER_METADATA_URI_V4"} & set(environment)
    if overridden or "FARGATE" not in task.get("requiresCompatibilities", []):
        return ["KCL_WORKER_METRICS is on but the task metadata endpoint is overridden or not guaranteed (Fargate)"]
    return []


def test_the_manifests_say_worker_metrics_are_off_and_agree_with_the_pod():
    assert settings_configmap()["KCL_WORKER_METRICS"] == "false"
    deployment, account = manifest("Deployment"), manifest("ServiceAccount")
    assert kubernetes_problems(settings_configmap(), deployment, account) == []
    assert ecs_problems(task_definition()) == []


def test_worker_metrics_on_without_the_token_is_caught():
    settings = {**settings_configmap(), "KCL_WORKER_METRICS": "true"}
    deployment, account = manifest("Deployment"), manifest("ServiceAccount")
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert kubernetes_problems(settings, deployment, account), "the token is not mounted: must be flagged"
    mounted = copy.deepcopy(deployment)
    mounted["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    assert kubernetes_problems(settings, mounted, account) == []
    unset = copy.deepcopy(deployment)
    del unset["spec"]["template"]["spec"]["automountServiceAccountToken"]
    assert kubernetes_problems(settings, unset, account), "the service account's false applies then"
    del settings["KCL_WORKER_METRICS"]
    assert kubernetes_problems(settings, mounted, account), "it must be said, not defaulted"


def test_worker_metrics_on_ecs_need_the_task_metadata_endpoint():
    task = copy.deepcopy(task_definition())
    environment = task["containerDefinitions"][0]["environment"]
    for item in environment:
        if item["name"] == "KCL_WORKER_METRICS":
            item["value"] = "true"
    assert ecs_problems(task) == []
    environment.append({"name": "ECS_CONTAINER_METADATA_URI_V4", "value": "http://127.0.0.1:1"})
    assert ecs_problems(task)
