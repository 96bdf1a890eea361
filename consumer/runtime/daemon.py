"""The KCL MultiLangDaemon as a program we start: its properties (rendered from a template) and its command line.

The properties format is Java's ``key = value`` lines with ``#``/``!`` comments; :func:`parse_properties` reads it
and :func:`render_properties` sets keys in a template while keeping everything else as written.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from consumer.errors import DaemonSetupError
from consumer.runtime.resources import LOGBACK_CONFIG, record_processor_path
from consumer.runtime.settings import InitialPosition, Settings

__all__ = [
    "DAEMON_MAIN_CLASS",
    "daemon_command",
    "parse_properties",
    "properties_overrides",
    "render_properties",
]

DAEMON_MAIN_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"


def properties_overrides(settings: Settings, *, python: str = sys.executable) -> dict[str, str | None]:
    """The daemon properties that come from the settings (None: remove the key from the template)."""
    values: dict[str, str | None] = {
        "executableName": f"{python} {record_processor_path()}",
        "streamName": settings.input_stream_name,
        "applicationName": settings.kcl_application_name,
        "regionName": settings.aws_region,
        "workerId": settings.kcl_worker_id,
        "maxRecords": str(settings.kcl_max_records),
        "idleTimeBetweenReadsInMillis": str(settings.kcl_idle_time_between_reads_ms),
        "metricsLevel": settings.daemon_metrics_level,
    }
    if settings.kcl_initial_position is InitialPosition.AT_TIMESTAMP:
        assert settings.kcl_initial_timestamp is not None  # checked by Settings
        # The daemon reads this as seconds since the epoch and starts AT_TIMESTAMP.
        values["initialPositionInStreamExtended"] = str(int(settings.kcl_initial_timestamp.timestamp()))
        values["initialPositionInStream"] = None
    else:
        values["initialPositionInStream"] = settings.kcl_initial_position.value
    if settings.aws_endpoint_url_kinesis is not None:
        values["kinesisEndpoint"] = str(settings.aws_endpoint_url_kinesis).rstrip("/")
    if settings.aws_endpoint_url_dynamodb is not None:
        values["dynamoDBEndpoint"] = str(settings.aws_endpoint_url_dynamodb).rstrip("/")
    values.update(settings.kcl_extra_properties)
    for key, value in values.items():
        if not key.isidentifier() or any(char in (value or "") for char in "\n\r"):
            raise DaemonSetupError(f"daemon property {key!r}={value!r} cannot be written to a properties file")
    return values


def _key(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", "!")) or "=" not in stripped:
        return None
    return stripped.split("=", 1)[0].strip()


def parse_properties(text: str) -> dict[str, str]:
    """The keys and values of a properties text (the last value of a key repeated wins, as in Java)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key = _key(line)
        if key is not None:
            values[key] = line.split("=", 1)[1].strip()
    return values


def render_properties(template: str, overrides: dict[str, str | None]) -> str:
    """Set the keys of ``template`` named in ``overrides`` (None removes the key); append the keys it lacks.

    Comments and every other key are kept as written, so an operator's tuning of the template survives.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for line in template.splitlines():
        key = _key(line)
        if key is None or key not in overrides:
            lines.append(line)
        elif key not in seen and overrides[key] is not None:
            lines.append(f"{key} = {overrides[key]}")
            seen.add(key)
    lines.extend(f"{key} = {value}" for key, value in overrides.items() if value is not None and key not in seen)
    return "\n".join(lines) + "\n"


def daemon_command(settings: Settings, properties: Path, *, logback: Path = LOGBACK_CONFIG) -> list[str]:
    """``java -cp <KCL_JAR_DIR>/* MultiLangDaemon --properties-file P --log-configuration L``."""
    return [
        settings.java_bin,
        *shlex.split(settings.kcl_java_opts),
        "-cp",
        f"{settings.kcl_jar_dir}/*",
        DAEMON_MAIN_CLASS,
        "--properties-file",
        str(properties),
        "--log-configuration",
        str(logback),
    ]
