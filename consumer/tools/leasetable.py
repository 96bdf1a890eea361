"""What the daemon keeps in DynamoDB, read back, and KCL 3's lease table for the version comparison's local runs.

The shipped daemon (KCL 2.7.2) creates its lease table itself. KCL 3 adds a global secondary index,
``LeaseOwnerToLeaseKeyIndex``, to the lease table with UpdateTable; dynalite (the local DynamoDB) does not implement
adding an index that way, and the daemon then gives up after 20 attempts. So for the comparison's KCL 3 variant the
tooling creates the lease table itself, with the index, exactly as KCL 3 leaves it on real DynamoDB, before a
consumer starts against the local stack (:meth:`ConsumerProcess.start <consumer.tools.harness.ConsumerProcess.start>`
with ``lease_table=True``). Nothing here ever talks to anything but a loopback endpoint.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from consumer.errors import ConsumerError
from consumer.runtime.settings import is_loopback
from consumer.tools.streams import DUMMY_CREDENTIALS

__all__ = [
    "LEASE_OWNER_INDEX",
    "coordinator_state",
    "create_lease_table",
    "leases",
    "prepare_local_lease_table",
    "table_names",
]

#: The index KCL 3 reads a worker's leases through.
LEASE_OWNER_INDEX = "LeaseOwnerToLeaseKeyIndex"
_REGION = "us-east-1"


def _is_loopback(endpoint: str) -> bool:
    return is_loopback(urllib.parse.urlparse(endpoint).hostname or "")


def _client(endpoint: str) -> Any:
    import boto3

    if not _is_loopback(endpoint):
        raise ConsumerError(f"{endpoint} is not a loopback address: the lease tools only touch the local stack")
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=_REGION,
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def create_lease_table(endpoint: str, name: str, *, timeout: float = 30.0) -> bool:
    """Create lease table ``name`` with KCL 3's key schema and index (on-demand billing) and wait until it is
    ACTIVE; False when it already existed."""
    client = _client(endpoint)
    try:
        client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            AttributeDefinitions=[
                {"AttributeName": "leaseKey", "AttributeType": "S"},
                {"AttributeName": "leaseOwner", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            GlobalSecondaryIndexes=[
                {
                    "IndexName": LEASE_OWNER_INDEX,
                    "KeySchema": [
                        {"AttributeName": "leaseOwner", "KeyType": "HASH"},
                        {"AttributeName": "leaseKey", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            ],
        )
        created = True
    except client.exceptions.ResourceInUseException:
        created = False
    deadline = time.monotonic() + timeout
    while client.describe_table(TableName=name)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise ConsumerError(f"lease table {name} not ACTIVE after {timeout:g} s")
        time.sleep(0.05)
    return created


def prepare_local_lease_table(env: Mapping[str, str]) -> bool:
    """Create the lease table of a consumer's environment (``KCL_APPLICATION_NAME``) when it runs against a local
    DynamoDB (``AWS_ENDPOINT_URL_DYNAMODB`` on loopback); False when there is nothing to do."""
    endpoint = env.get("AWS_ENDPOINT_URL_DYNAMODB")
    if not endpoint or not _is_loopback(endpoint):
        return False
    create_lease_table(endpoint, env["KCL_APPLICATION_NAME"])
    return True


def table_names(endpoint: str) -> list[str]:
    return list(_client(endpoint).list_tables()["TableNames"])


def leases(endpoint: str, name: str) -> dict[str, dict[str, str]]:
    """The lease table: shard id -> {owner, checkpoint}."""
    items = _client(endpoint).scan(TableName=name)["Items"]
    return {
        item["leaseKey"]["S"]: {
            "owner": item.get("leaseOwner", {}).get("S", ""),
            "checkpoint": item.get("checkpoint", {}).get("S", ""),
        }
        for item in items
    }


def coordinator_state(endpoint: str, name: str) -> dict[str, dict[str, str]]:
    """KCL 3's ``<application>-CoordinatorState`` table by item key (``Leader``: the leader lock, its
    ``ownerName``; ``Migration3.0``: the client version, ``cv``); empty when the table does not exist."""
    client = _client(endpoint)
    try:
        items = client.scan(TableName=f"{name}-CoordinatorState")["Items"]
    except client.exceptions.ResourceNotFoundException:
        return {}
    return {
        item["key"]["S"]: {field: str(next(iter(value.values()))) for field, value in item.items() if field != "key"}
        for item in items
    }
