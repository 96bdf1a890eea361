"""iam/consumer-policy.json grants exactly the actions the service calls, on the resources the manifests name.

The actions are derived, not listed by hand:
- the daemon's: the AWS SDK client methods the KCL jars of the lock reference (their classes' constant pools), each
  DynamoDB call attributed to the table its class works on (KCL 2.7.2 has one, the lease table; KCL 3 would add an
  index and two tables), less the enhanced fan-out calls (properties/consumer.properties sets
  retrievalMode = POLLING) and point-in-time recovery (off in the daemon's table configuration);
- the processors' and the launcher's: the boto3 client calls in the modules that ``python -m consumer run`` and
  record_processor.py import (their import graph, read with ast), each matched to an operation of botocore's models;
- the model download's: MLflow's S3 artifact repository lists (ListObjectsV2 -> s3:ListBucket) and downloads
  (download_file -> s3:GetObject) on the read path the launcher uses.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

from consumer.runtime.jars import default_jar_dir as jar_dir
from consumer.runtime.jars import read_lock
from tests.static.classfile import class_method_references
from tests.static.conftest import REPO, settings_configmap, task_definition

POLICY = REPO / "iam" / "consumer-policy.json"
KEDA_POLICY = REPO / "iam" / "keda-scaler-policy.json"
#: The jars whose classes call AWS, found in the lock by artifact: the KCL and its multilang daemon.
KCL_ARTIFACTS = ("amazon-kinesis-client", "amazon-kinesis-client-multilang")
#: The web endpoint's role (k8s/web/serviceaccount.yaml): it only reads the model.
WEB_POLICY = REPO / "iam" / "web-policy.json"
#: SDK client package -> IAM service prefix (the same names in botocore).
SDK_SERVICES = {"kinesis": "kinesis", "dynamodb": "dynamodb", "cloudwatch": "cloudwatch"}
#: The DynamoDB enhanced client's tables: their methods are DynamoDB operations on the table they map (KCL 2.7.2's
#: classes use none; KCL 3's do).
ENHANCED_TABLES = ("software/amazon/awssdk/enhanced/dynamodb/DynamoDbAsyncTable",)
#: Only used with retrievalMode = FANOUT (enhanced fan-out), which the properties template turns off.
FANOUT_ONLY = {"kinesis:RegisterStreamConsumer", "kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"}
#: Only used when the lease table's configuration turns point-in-time recovery on (DynamoDBLeaseRefresher); the
#: daemon's configuration leaves it off.
PITR_ONLY = {"dynamodb:UpdateContinuousBackups"}

# The daemon's resources. The lease table is named KCL_APPLICATION_NAME.
INPUT_STREAM, METRICS, LEASES = "input stream", "metrics", "lease table"
#: Which of the daemon's tables each class that calls DynamoDB works on (read in KCL 2.7.2's classes). A class that
#: calls DynamoDB and is not attributed here fails test_every_dynamodb_caller_is_attributed: a new KCL's calls (KCL
#: 3's coordinator state and worker metric stats tables, its lease owner index) are attributed before they are
#: granted.
TABLES_OF_CLASS = {
    "software/amazon/kinesis/leases/dynamodb/DynamoDBLeaseRefresher": {LEASES},
}
#: The shard processes' executable; the launcher's entry is the `run` command of consumer/cli.py (see below).
SHARD_ENTRY_POINT = "record_processor.py"
BOTO3_SERVICES = ("kinesis", "dynamodb", "cloudwatch", "s3", "sts")
#: Actions with no resource-level permissions: they need Resource "*" and are narrowed by a condition instead.
NO_RESOURCE_LEVEL = {"cloudwatch:PutMetricData": "cloudwatch:namespace"}


def statements(path: Path = POLICY) -> list[dict]:
    return json.loads(path.read_text())["Statement"]


def granted(path: Path = POLICY) -> set[str]:
    return {action for statement in statements(path) for action in as_list(statement["Action"])}


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def kcl_jars() -> dict[str, Path]:
    """Artifact -> the installed jar, for the jars of KCL_ARTIFACTS in the lock."""
    jars = {pin.artifact: jar_dir() / pin.file_name for pin in read_lock().pins if pin.artifact in KCL_ARTIFACTS}
    assert set(jars) == set(KCL_ARTIFACTS), f"the lock lacks {set(KCL_ARTIFACTS) - set(jars)}"
    return jars


def sdk_action(owner: str, method: str) -> str | None:
    """The IAM action of an SDK client (or enhanced DynamoDB table) method, None for anything else."""
    package, client = owner.split("/")[-2:]
    if owner in ENHANCED_TABLES:
        package = "dynamodb"
    elif package not in SDK_SERVICES or not client.endswith("Client"):
        return None
    operation = method[0].upper() + method[1:]
    if operation in botocore.session.get_session().get_service_model(package).operation_names:
        return f"{SDK_SERVICES[package]}:{operation}"
    return None


def daemon_calls() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(resource -> the actions the daemon's classes call on it, unattributed DynamoDB caller -> its actions)."""
    calls: dict[str, set[str]] = {}
    unattributed: dict[str, set[str]] = {}
    prefixes = ("software/amazon/awssdk/services/", *ENHANCED_TABLES)
    for jar in kcl_jars().values():
        for owner_class, references in class_method_references(jar, prefixes).items():
            for action in filter(None, (sdk_action(owner, method) for owner, method in references)):
                if not action.startswith("dynamodb:"):
                    calls.setdefault(INPUT_STREAM if action.startswith("kinesis:") else METRICS, set()).add(action)
                    continue
                tables = TABLES_OF_CLASS.get(owner_class)
                if tables is None:
                    unattributed.setdefault(owner_class, set()).add(action)
                for table in tables or ():
                    calls.setdefault(table, set()).add(action)
    return calls, unattributed


def daemon_needs() -> dict[str, set[str]]:
    """What the daemon calls with the template's configuration: no fan-out, no point-in-time recovery."""
    calls, _ = daemon_calls()
    return {resource: actions - FANOUT_ONLY - PITR_ONLY for resource, actions in calls.items()}


def daemon_actions() -> set[str]:
    return {action for actions in daemon_needs().values() for action in actions}


def imported_files(nodes: list[ast.AST]) -> list[Path]:
    """The repository files that the import statements among ``nodes`` (and inside them) name."""
    files = []
    for node in (child for top in nodes for child in ast.walk(top)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] == "consumer":
                module = REPO / Path(*name.split("."))
                files += [module.with_suffix(".py"), module / "__init__.py"]
    return files


def service_modules() -> set[Path]:
    """The repository files the service runs: what `python -m consumer run` imports (consumer/cli.py's module-level
    imports and those of its `run` command, not the tools' commands) and what record_processor.py imports,
    transitively (ast, no execution)."""
    cli = ast.parse((REPO / "consumer" / "cli.py").read_text())
    launcher = [node for node in cli.body if isinstance(node, ast.Import | ast.ImportFrom)]
    launcher += [node for node in cli.body if isinstance(node, ast.FunctionDef) and node.name == "run"]
    assert len(launcher) > 1, "consumer/cli.py has no `run` command"
    seen: set[Path] = {REPO / "consumer" / "cli.py"}
    pending = [*imported_files(launcher), REPO / SHARD_ENTRY_POINT]
    while pending:
        path = pending.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        pending += imported_files([ast.parse(path.read_text())])
    return seen


def boto3_operations() -> dict[str, set[str]]:
    """snake_case method name -> the IAM actions of the operations that have it, over BOTO3_SERVICES."""
    session = botocore.session.get_session()
    operations: dict[str, set[str]] = {}
    for service in BOTO3_SERVICES:
        model = session.get_service_model(service)
        prefix = model.metadata.get("signingName", service)
        for operation in model.operation_names:
            operations.setdefault(xform_name(operation), set()).add(f"{prefix}:{operation}")
    return operations


def client_calls(paths: set[Path]) -> dict[str, set[str]]:
    """The AWS operations called as ``<something>.<operation>(...)`` in ``paths``: method name -> files."""
    operations = boto3_operations()
    calls: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in operations:
                calls.setdefault(node.func.attr, set()).add(str(path.relative_to(REPO)))
    return calls


def processor_actions() -> set[str]:
    operations = boto3_operations()
    actions = set()
    for method in client_calls(service_modules()):
        (action,) = operations[method]  # an operation name shared by two services would need a closer look
        actions.add(action)
    return actions


def model_download_actions() -> set[str]:
    """What MLflow's S3 artifact repository calls to list and download a model (the launcher's read path)."""
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

    called = set()
    for method in (S3ArtifactRepository.list_artifacts, S3ArtifactRepository._download_file):
        source = inspect.getsource(method)
        called |= set(re.findall(r"\.(download_file|list_objects_v2|get_object|head_object)\(", source))
        if "_iterate_s3_paginated_results" in source:
            paginated = inspect.getsource(S3ArtifactRepository._iterate_s3_paginated_results)
            called |= set(re.findall(r'get_paginator\("(\w+)"\)', paginated))
    # download_file is s3transfer: HeadObject + GetObject (ranged), both allowed by s3:GetObject;
    # ListObjectsV2 is allowed by s3:ListBucket.
    assert called == {"download_file", "list_objects_v2"}, called
    return {"s3:GetObject", "s3:ListBucket"}


def test_kcl_properties_use_polling_so_fanout_calls_are_not_needed():
    properties = (REPO / "properties" / "consumer.properties").read_text()
    assert re.search(r"^retrievalMode\s*=\s*POLLING\s*$", properties, re.MULTILINE)
    calls, _ = daemon_calls()
    assert calls[INPUT_STREAM] >= FANOUT_ONLY, "the jar analysis found the fan-out calls, so it reads the jars"
    assert calls[LEASES] >= PITR_ONLY, "and the point-in-time recovery call"
    assert "pitr" not in properties.lower() and "pointintime" not in properties.lower()


def test_every_dynamodb_caller_is_attributed_to_a_table():
    calls, unattributed = daemon_calls()
    assert unattributed == {}, "attribute these classes' calls to a table (TABLES_OF_CLASS) before granting them"
    assert set(calls) == {INPUT_STREAM, METRICS, LEASES}


def test_the_daemon_creates_its_lease_table_and_adds_no_index():
    needs = daemon_needs()
    # KCL 2.7.2 creates its lease table when it is missing and waits for it; unlike KCL 3 it never changes the table
    # (UpdateTable: KCL 3's lease owner index) and never queries it.
    assert {"dynamodb:CreateTable", "dynamodb:DescribeTable"} <= needs[LEASES]
    assert not {"dynamodb:UpdateTable", "dynamodb:Query"} & needs[LEASES]


def test_the_policy_check_reads_the_actions_from_the_service_modules_not_the_tools():
    modules = {str(path.relative_to(REPO)) for path in service_modules()}
    assert {"consumer/pipeline/sink.py", "consumer/runtime/shard.py", "consumer/model/prepare.py"} <= modules
    assert not {path for path in modules if path.startswith("consumer/tools/")}, "tools are not part of the service"
    assert "kinesis:PutRecords" in processor_actions()


def test_policy_grants_exactly_the_actions_the_service_calls():
    needed = daemon_actions() | processor_actions() | model_download_actions()
    assert granted() == needed, {"missing": sorted(needed - granted()), "not used": sorted(granted() - needed)}


def test_policy_has_no_wildcard_actions_and_arn_resources():
    for statement in statements():
        assert statement["Effect"] == "Allow"
        assert not any("*" in action for action in as_list(statement["Action"]))
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                (action,) = as_list(statement["Action"])
                assert action in NO_RESOURCE_LEVEL
                assert NO_RESOURCE_LEVEL[action] in statement["Condition"]["StringEquals"]
            else:
                assert resource.startswith("arn:aws:") and not resource.endswith(":*")


def test_resources_are_the_streams_table_and_namespace_the_manifests_name():
    settings = settings_configmap()
    region, account = settings["AWS_REGION"], task_definition()["taskRoleArn"].split(":")[4]

    def stream(name: str) -> str:
        return f"arn:aws:kinesis:{region}:{account}:stream/{name}"

    by_action: dict[str, set[str]] = {}
    for statement in statements():
        for action in as_list(statement["Action"]):
            by_action.setdefault(action, set()).update(as_list(statement["Resource"]))
    application = settings["KCL_APPLICATION_NAME"]
    table = f"arn:aws:dynamodb:{region}:{account}:table/{application}"
    arns = {INPUT_STREAM: stream(settings["INPUT_STREAM_NAME"]), LEASES: table, METRICS: "*"}
    on_arn: dict[str, set[str]] = {}
    for statement in statements():
        for resource in as_list(statement["Resource"]):
            on_arn.setdefault(resource, set()).update(as_list(statement["Action"]))
    for resource, actions in daemon_needs().items():
        assert on_arn.get(arns[resource], set()) == actions, resource
    assert by_action["kinesis:PutRecords"] == {
        stream(settings["PREDICTIONS_STREAM_NAME"]),
        stream(settings["DEAD_LETTER_STREAM_NAME"]),
    }
    (metrics,) = [s for s in statements() if "cloudwatch:PutMetricData" in as_list(s["Action"])]
    # The KCL publishes under its application name (ConfigsBuilder: namespace = applicationName).
    assert metrics["Condition"]["StringEquals"]["cloudwatch:namespace"] == settings["KCL_APPLICATION_NAME"]
    (keda,) = statements(KEDA_POLICY)
    assert keda["Resource"] == stream(settings["INPUT_STREAM_NAME"])


def test_web_policy_grants_only_reading_the_model_the_consumer_reads():
    """`serve` prepares the model as the launcher does and calls nothing else of AWS."""
    assert granted(WEB_POLICY) == model_download_actions()

    def resources(path: Path) -> dict[str, set[str]]:
        return {
            action: set(as_list(statement["Resource"]))
            for statement in statements(path)
            for action in as_list(statement["Action"])
            if action in model_download_actions()
        }

    assert resources(WEB_POLICY) == resources(POLICY)


@pytest.mark.parametrize("path", [POLICY, KEDA_POLICY, WEB_POLICY], ids=lambda path: path.name)
def test_policy_passes_parliament(static_tools, path):
    """Known actions, resource ARNs of the type each action takes, condition keys the action supports."""
    result = subprocess.run(
        [static_tools / "parliament", "--json", "--string", path.read_text()],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert findings == [], findings
    assert result.returncode == 0, result.stderr
