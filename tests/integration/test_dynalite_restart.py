"""dynalite with a LevelDB path keeps its tables across LocalStack.restart_dynamodb (the lease-store fault)."""

from __future__ import annotations

import boto3

from consumer.tools.localstack import LocalStack


def dynamodb(stack: LocalStack):
    return boto3.client(
        "dynamodb",
        endpoint_url=stack.dynamodb_endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def test_a_restarted_dynalite_with_a_path_keeps_its_items_on_the_same_port(emulators_installed, tmp_path):
    with LocalStack(tmp_path / "stack", node_modules=emulators_installed, dynamodb_path=tmp_path / "leveldb") as stack:
        client = dynamodb(stack)
        client.create_table(
            TableName="leases",
            KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.get_waiter("table_exists").wait(TableName="leases", WaiterConfig={"Delay": 0.1})
        client.put_item(TableName="leases", Item={"leaseKey": {"S": "shardId-0"}, "checkpoint": {"S": "42"}})
        endpoint, old_pid = stack.dynamodb_endpoint, stack.pids["dynalite"]

        stack.restart_dynamodb()

        assert stack.pids["dynalite"] != old_pid
        assert stack.dynamodb_endpoint == endpoint
        item = dynamodb(stack).get_item(TableName="leases", Key={"leaseKey": {"S": "shardId-0"}})["Item"]
        assert item["checkpoint"] == {"S": "42"}
