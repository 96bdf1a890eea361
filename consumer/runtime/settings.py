"""The typed settings, read from the environment once, at start-up.

Nothing reads the environment at import time. The launcher and every shard process build ``Settings``
with :func:`load_settings`; the batch command and the web endpoint (:mod:`consumer.serving`) build
``ServingSettings`` with :func:`load_serving_settings`. Both share :class:`ModelSettings`, the model's settings, so
a setting of the model means the same in every deployment. A bad or missing value stops start-up with
:class:`~consumer.errors.SettingsError`, whose message names the environment variable.
"""

from __future__ import annotations

import ipaddress
import socket
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, HttpUrl, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from consumer.errors import SettingsError
from consumer.model.trust import DEFAULT_TRUSTED_TYPES
from consumer.runtime.jars import default_jar_dir, default_java_bin
from consumer.runtime.resources import PROPERTIES_TEMPLATE

__all__ = [
    "InitialPosition",
    "ModelSettings",
    "ServingSettings",
    "Settings",
    "is_loopback",
    "load_serving_settings",
    "load_settings",
]

StreamName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.-]+$")]


class InitialPosition(StrEnum):
    """Where the daemon starts reading a shard that has no checkpoint yet."""

    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"


class ModelSettings(BaseSettings):
    """What every deployment of the model needs: the stream's launcher and shards, the batch command and the web
    endpoint. Field names are the environment variables."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # --- The model.
    model_uri: str = Field(min_length=1, description="models:/name@alias, models:/name/N, runs:/, s3:// or a dir.")
    model_cache_dir: Path = Field(default=Path("/tmp/consumer-model"), description="Where the model is prepared.")
    prepared_model_dir: Path | None = Field(
        default=None,
        description="Set by the launcher for the shard processes (and by `serve` for its web server); not for users.",
    )
    allow_pickle_models: bool = Field(
        default=False,
        description="Accept pickle and cloudpickle models, which run code when loaded: only from a registry or a "
        "bucket whose writers you trust.",
    )
    model_trusted_types: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_TRUSTED_TYPES,
        description="Comma-separated type names a skops model may need beyond skops' defaults; the default covers "
        "a DictVectorizer and scikit-learn's tree ensembles in a Pipeline.",
    )
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="Log level.")

    @field_validator("model_trusted_types", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value


class Settings(ModelSettings):
    """Everything the launcher and the record processors need. Field names are the environment variables."""

    # --- AWS: the standard variables, shared with boto3 and the daemon.
    aws_region: str = Field(
        min_length=1, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"), description="AWS region."
    )
    aws_endpoint_url_kinesis: HttpUrl | None = Field(
        default=None, description="Kinesis endpoint override (emulators); also the daemon's kinesisEndpoint."
    )
    aws_endpoint_url_dynamodb: HttpUrl | None = Field(
        default=None, description="DynamoDB endpoint override (emulators); also the daemon's dynamoDBEndpoint."
    )

    # --- Streams and the lease table.
    input_stream_name: StreamName = Field(description="Stream of ride events to consume.")
    predictions_stream_name: StreamName = Field(description="Stream the prediction events go to.")
    dead_letter_stream_name: StreamName = Field(description="Stream for records that cannot be scored.")
    kcl_application_name: StreamName = Field(description="KCL application name; also the DynamoDB lease table.")
    kcl_initial_position: InitialPosition = Field(
        default=InitialPosition.LATEST, description="Where a shard without a checkpoint starts."
    )
    kcl_initial_timestamp: datetime | None = Field(
        default=None, description="ISO 8601 instant to start from; required with KCL_INITIAL_POSITION=AT_TIMESTAMP."
    )
    kcl_worker_id: str = Field(
        default_factory=socket.gethostname, min_length=1, description="Stable worker id (the pod name in k8s)."
    )
    kcl_max_records: int = Field(default=1000, ge=1, le=10_000, description="Records per GetRecords call.")
    kcl_idle_time_between_reads_ms: int = Field(
        default=1000, ge=200, description="Pause between GetRecords calls per shard (AWS allows 5 calls/s/shard)."
    )
    kcl_extra_properties: dict[str, str] = Field(
        default_factory=dict,
        description='More daemon properties as JSON, e.g. {"shardSyncIntervalMillis": "10000"}; they win over '
        "the template.",
    )
    kcl_metrics_level: str | None = Field(
        default=None,
        pattern="^(NONE|SUMMARY|DETAILED)$",
        description="The daemon's CloudWatch metrics; default NONE with an endpoint override, else SUMMARY.",
    )

    # --- Following the registry.
    model_refresh_seconds: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description="When MODEL_URI names an alias (models:/name@alias), ask the registry this often which version "
        "it points to and serve a new one without a restart; 0: never (the version found at start-up stays).",
    )

    # --- Behaviour.
    test_run: bool = Field(default=False, description="Dry run: score and log, write nothing, never checkpoint.")
    put_max_attempts: int = Field(default=8, ge=1, le=30, description="PutRecords attempts before a shard stops.")
    put_backoff_max_seconds: float = Field(default=5.0, gt=0, le=60, description="Cap of the retry backoff.")
    batch_deadline_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Everything one batch does (scoring, writing with retries, checkpointing) must be over by then, "
        "or the shard stops and replays it; below the daemon's timeoutInSeconds (checked at start-up).",
    )
    max_record_age_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Rides that arrived longer ago than this are dead-lettered as stale, not scored (off: unset).",
    )

    # --- Metrics and health.
    metrics_port: int = Field(
        default=9404,
        ge=0,
        le=65535,
        description="Port of /metrics, /healthz and /readyz (served by the launcher); 0 picks a free port and logs it.",
    )
    metrics_host: str = Field(default="0.0.0.0", min_length=1, description="Address the metrics server binds.")
    prometheus_multiproc_dir: Path = Field(
        default=Path("/tmp/consumer-metrics"),
        description="Where shard processes write their metrics; the launcher empties it at start.",
    )

    # --- Performance (docs/performance.md has the benchmark's figures with and without the fork server).
    shard_fork_server: bool = Field(
        default=True,
        description="Fork every shard's worker from one process that has imported the code and loaded the model "
        "(their memory is shared); false: one fresh Python process per shard.",
    )
    bench_discard_output: bool = Field(
        default=False,
        description="Benchmarks only: drop every event instead of writing it (a null sink) and still checkpoint. "
        "Refused unless AWS_ENDPOINT_URL_KINESIS is a loopback address (a local emulator).",
    )

    # --- The daemon.
    java_bin: str = Field(
        default_factory=lambda: str(default_java_bin()),
        min_length=1,
        description="The java executable for the daemon: by default the runtime cut to the daemon's modules that "
        "`make setup` and the image build link into <environment>/share/kcl-jre; a path, or a name on PATH.",
    )
    kcl_jar_dir: Path = Field(
        default_factory=default_jar_dir,
        description="The KCL jars, verified against the packaged lock at every start (installed by `make setup` "
        "and the image build into <environment>/share/kcl-jars).",
    )
    kcl_java_opts: str = Field(default="-Xmx256m -XX:+UseSerialGC", description="JVM options for the daemon.")
    kcl_properties_template: Path = Field(
        default=PROPERTIES_TEMPLATE,
        description="The daemon's properties template (the packaged properties/consumer.properties); mount your own "
        "and point here to tune the daemon.",
    )
    consumer_work_dir: Path = Field(
        default=Path("/tmp/consumer"), description="Rendered properties and other run-time files."
    )

    @model_validator(mode="after")
    def _timestamp_goes_with_at_timestamp(self) -> Settings:
        if self.kcl_initial_position is InitialPosition.AT_TIMESTAMP and self.kcl_initial_timestamp is None:
            raise ValueError("KCL_INITIAL_TIMESTAMP is required when KCL_INITIAL_POSITION=AT_TIMESTAMP")
        return self

    @model_validator(mode="after")
    def _output_is_discarded_only_against_a_local_emulator(self) -> Settings:
        endpoint = self.aws_endpoint_url_kinesis
        host = (endpoint.host or "").strip("[]") if endpoint is not None else ""
        if self.bench_discard_output and not is_loopback(host):
            raise ValueError(
                "BENCH_DISCARD_OUTPUT=true drops every prediction: it is accepted only for a benchmark against a "
                f"local emulator, with AWS_ENDPOINT_URL_KINESIS on a loopback address (got {str(endpoint)!r})"
            )
        return self

    @property
    def daemon_metrics_level(self) -> str:
        if self.kcl_metrics_level:
            return self.kcl_metrics_level
        uses_emulators = self.aws_endpoint_url_kinesis is not None or self.aws_endpoint_url_dynamodb is not None
        return "NONE" if uses_emulators else "SUMMARY"


class ServingSettings(ModelSettings):
    """What the batch command (``score``) and the web endpoint (``serve``) need besides the model."""

    aws_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
        description="AWS region (`score` with s3:// paths; default: the SDK's).",
    )
    aws_endpoint_url_s3: HttpUrl | None = Field(
        default=None, description="S3 endpoint override for `score`'s s3:// paths (an emulator)."
    )

    serve_host: str = Field(default="0.0.0.0", min_length=1, description="Address the web endpoint binds.")
    serve_port: int = Field(
        default=9696, ge=0, le=65535, description="Port of the web endpoint (the course's 9696); 0 picks a free one."
    )
    serve_workers: int = Field(
        default=2, ge=1, le=64, description="Web worker processes, forked after the model is loaded (they share it)."
    )
    serve_threads: int = Field(default=4, ge=1, le=64, description="Threads per web worker (keep-alive connections).")
    serve_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body /predict reads; a larger one gets 413."
    )
    prometheus_multiproc_dir: Path = Field(
        default=Path("/tmp/consumer-web-metrics"),
        description="Where the web workers write their metrics; `serve` empties it at start.",
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, no port) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        name = "_".join(str(part) for part in problem["loc"]).upper() or "settings"
        value = problem.get("input")
        shown = "" if isinstance(value, dict) or value is None else f" (got {value!r:.60})"
        lines.append(f"{name}: {problem['msg']}{shown}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings() -> Settings:
    """Build Settings from the process environment; raise SettingsError naming every bad variable."""
    try:
        return Settings()  # pydantic-settings fills the fields from os.environ (the pydantic mypy plugin knows)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def load_serving_settings() -> ServingSettings:
    """Build ServingSettings from the process environment; raise SettingsError naming every bad variable."""
    try:
        return ServingSettings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
