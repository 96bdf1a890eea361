"""The one place a Kinesis client is made, for the service and for the tools: boto3's, and the sinks' PutRecords
(:mod:`consumer.runtime.putrecords`), which takes its endpoint, region, credentials and transport from a boto3
client made the same way.

Nothing here reads the environment itself: a region, an endpoint and credentials are passed in, or boto3's own
chain (``AWS_REGION``, ``AWS_ENDPOINT_URL_KINESIS``, the credential chain) resolves what is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import boto3
import botocore
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session

from consumer.runtime.putrecords import PutRecordsClient, user_agent

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient
else:
    KinesisClient = Any

__all__ = ["KinesisClient", "kinesis_client", "put_records_client"]


def kinesis_client(
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    credentials: Mapping[str, str] | None = None,
    max_attempts: int = 5,
    connect_timeout: float = 5.0,
    read_timeout: float = 10.0,
) -> KinesisClient:
    """A Kinesis client. ``credentials`` holds ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (the emulators'
    dummy keys) or None for the default chain.

    botocore's standard retry mode retries throttling and transient errors of whole calls ``max_attempts`` times.
    Partial PutRecords failures are not errors to botocore: the caller handles them.
    """
    client: KinesisClient = _default_session().client(
        "kinesis",
        region_name=region,
        endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"] if credentials else None,
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"] if credentials else None,
        config=Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        ),
    )
    return client


def put_records_client(
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    credentials: Mapping[str, str] | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 10.0,
) -> PutRecordsClient:
    """The sinks' PutRecords: what :func:`kinesis_client` with the same arguments would send, built and parsed
    without botocore's model (:mod:`consumer.runtime.putrecords` says why). It never retries: the sink's loop is the
    only one, its budget known and every retry logged.

    The endpoint and the region are those the boto3 client resolves; the transport is that client's own HTTP session
    (its pool, TLS verification, proxies and timeouts); the credentials are the ones passed, or the session's chain,
    resolved at the first call."""
    client = kinesis_client(
        region=region,
        endpoint_url=endpoint_url,
        credentials=credentials,
        max_attempts=1,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    # botocore keeps the client's configured HTTP session on its endpoint and has no public accessor for it;
    # tests/unit/test_put_records_client.py fails if a botocore upgrade moves it.
    http = getattr(getattr(client, "_endpoint", None), "http_session", None)
    if not isinstance(http, URLLib3Session):
        raise TypeError(f"botocore {botocore.__version__} keeps no URLLib3Session on a client's endpoint")
    if credentials:
        static = Credentials(credentials["AWS_ACCESS_KEY_ID"], credentials["AWS_SECRET_ACCESS_KEY"])
        source: Callable[[], Credentials | None] = lambda: static  # noqa: E731
    else:
        source = _default_session().get_credentials
    return PutRecordsClient(
        endpoint_url=client.meta.endpoint_url,
        region=client.meta.region_name,
        credentials=source,
        http=http,
        user_agent=user_agent(),
    )


def _default_session() -> boto3.Session:
    """boto3's default session, made at the first call (``boto3.client`` makes it the same way). One per process,
    so that botocore loads the Kinesis model and endpoint rules once; the fork server loads them before it forks
    (:mod:`consumer.runtime.forkserver`), and every worker shares them."""
    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    return boto3.DEFAULT_SESSION
