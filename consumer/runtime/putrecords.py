"""PutRecords for the sinks, on botocore's signer and HTTP session but without its serializer and parser.

The record processors write one Kinesis record per ride, 1,000 a second per shard at AWS's write limit. boto3's
``put_records`` walks the API's model for every record twice (the request's serializer, the response's parser) and
emits a dozen events per call; against the local emulator that was about two thirds of the put's CPU, the largest
part of a shard's that is not the model (docs/performance.md gives the figures). This client builds the same request
with orjson and parses the answer with it; everything else is botocore's own:

- the endpoint, the region and the credentials are those a boto3 client resolves (``AWS_ENDPOINT_URL_KINESIS``, the
  endpoint rules, the credential chain with its refresh: the frozen credentials are taken per call);
- the request is signed by botocore's ``SigV4Auth`` and sent by its ``URLLib3Session`` (connection pool, TLS
  verification, the environment's proxies, the timeouts), so a transport failure raises the same botocore exceptions;
- an error answer raises botocore's ``ClientError`` with the code and message botocore's JSON parser would give.

It speaks one operation of the Kinesis JSON protocol (``Kinesis_20131202.PutRecords``, application/x-amz-json-1.1),
stable since 2013. Every other call the service makes goes through boto3.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from http.client import responses as HTTP_REASONS
from typing import Any, Protocol
from urllib.parse import urlsplit

import botocore
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.httpsession import URLLib3Session

__all__ = ["CredentialSource", "PutRecordsClient", "UnreadableAnswer", "user_agent"]

_TARGET = "Kinesis_20131202.PutRecords"
_CONTENT_TYPE = "application/x-amz-json-1.1"


class UnreadableAnswer(BotoCoreError):
    """A 200 whose body is not a PutRecords answer: what was written is unknown (botocore's parser fails too)."""

    fmt = "PutRecords answered 200 with a body that is not its answer: {content!r}"


class CredentialSource(Protocol):
    """Where the credentials come from: a botocore session's ``get_credentials`` (the chain, resolved at the first
    call; its answer refreshes itself when it can expire). It returns None when the chain finds none."""

    def __call__(self) -> Credentials | None: ...


class PutRecordsClient:
    """``put_records(StreamName=..., Records=[{"Data": bytes, "PartitionKey": str}, ...])``, as boto3's client takes
    it and answers it (``{"FailedRecordCount", "Records": [{"ShardId", "SequenceNumber"} or {"ErrorCode",
    "ErrorMessage"}]}``), for :class:`~consumer.pipeline.sink.KinesisSink`. Made by
    :func:`consumer.runtime.aws.put_records_client`."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        region: str,
        credentials: CredentialSource,
        http: URLLib3Session,
        user_agent: str,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self._url = endpoint_url if urlsplit(endpoint_url).path else f"{endpoint_url}/"  # as botocore sends it
        self._credential_source = credentials
        self._credentials: Credentials | None = None
        self._http = http
        self._headers = {"Content-Type": _CONTENT_TYPE, "X-Amz-Target": _TARGET, "User-Agent": user_agent}

    def put_records(self, *, StreamName: str, Records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        body = orjson.dumps(
            {
                "StreamName": StreamName,
                "Records": [
                    {"Data": base64.b64encode(record["Data"]).decode("ascii"), "PartitionKey": record["PartitionKey"]}
                    for record in Records
                ],
            }
        )
        request = AWSRequest(method="POST", url=self._url, data=body, headers=dict(self._headers))
        SigV4Auth(self._frozen_credentials(), "kinesis", self.region).add_auth(request)
        response = self._http.send(request.prepare())  # transport failures raise botocore's own exceptions
        content = response.content
        if response.status_code != 200:
            raise ClientError(_error(response.status_code, response.headers, content), "PutRecords")
        try:
            answer = orjson.loads(content)
            records = answer["Records"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise UnreadableAnswer(content=content[:200]) from None
        if not isinstance(records, list):
            raise UnreadableAnswer(content=content[:200])
        return {"FailedRecordCount": answer.get("FailedRecordCount", 0), "Records": records}

    def _frozen_credentials(self) -> Any:
        """This call's credentials: the chain is resolved at the first call, as boto3's client resolves it (so a
        process that never writes never looks); refreshable credentials refresh themselves here."""
        if self._credentials is None:
            self._credentials = self._credential_source()
            if self._credentials is None:
                raise NoCredentialsError()
        return self._credentials.get_frozen_credentials()

    def __repr__(self) -> str:
        return f"PutRecordsClient(endpoint_url={self.endpoint_url!r}, region={self.region!r})"


def _error(status: int, headers: Mapping[str, str], content: bytes) -> Any:  # ClientError's response (a TypedDict)
    """The error response botocore's JSON parser makes of an answer: the code from the body's ``__type`` (or the
    ``x-amzn-ErrorType`` header) without its namespace, the message from ``message`` or ``Message``; an answer with
    neither gets the HTTP status as its code, as botocore gives it."""
    try:
        body = orjson.loads(content) if content else {}
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("__type") or headers.get("x-amzn-ErrorType") or "")
    code = code.split(":")[0].rsplit("#", 1)[-1]
    message = str(body.get("message") or body.get("Message") or "")
    if not code:
        code, message = str(status), message or HTTP_REASONS.get(status, "")
    return {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "RequestId": headers.get("x-amzn-RequestId", ""),
            "HTTPHeaders": dict(headers),
        },
    }


def user_agent() -> str:
    """What the requests say they are: botocore's name and version, and this client's."""
    return f"Botocore/{botocore.__version__} ride-duration-consumer-sink"
