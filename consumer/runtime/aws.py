"""The one place a boto3 Kinesis client is made, for the service and for the tools.

Nothing here reads the environment itself: a region, an endpoint and credentials are passed in, or boto3's own
chain (``AWS_REGION``, ``AWS_ENDPOINT_URL_KINESIS``, the credential chain) resolves what is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient
else:
    KinesisClient = Any

__all__ = ["KinesisClient", "kinesis_client"]


def kinesis_client(
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    credentials: Mapping[str, str] | None = None,
    max_attempts: int = 5,
    connect_timeout: float = 5.0,
    read_timeout: float = 10.0,
    validate_parameters: bool = True,
) -> KinesisClient:
    """A Kinesis client. ``credentials`` holds ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (the emulators'
    dummy keys) or None for the default chain.

    botocore's standard retry mode retries throttling and transient errors of whole calls ``max_attempts`` times;
    the record processor's sinks pass 1, so that their own loop is the only one, its budget known and every retry
    logged. Partial PutRecords failures are not errors to botocore: the caller handles them.

    ``validate_parameters=False`` skips botocore's check of each request against the API's model before it is
    sent, for a caller that builds its requests itself and checks what the service would refuse (the sinks: see
    :func:`consumer.pipeline.sink.chunked`). Kinesis still validates every request; what it refuses comes back as a
    ``ClientError`` from the service instead of botocore's ``ParamValidationError``.
    """
    client: KinesisClient = boto3.client(
        "kinesis",
        region_name=region,
        endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"] if credentials else None,
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"] if credentials else None,
        config=Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            parameter_validation=validate_parameters,
        ),
    )
    return client
