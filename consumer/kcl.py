"""The KCL MultiLangDaemon as a program we start: its jars (verified), its properties (rendered), its command.

The jars come with amazon_kclpy (``amazon_kclpy/jars``). They are checked against the SHA-256 list pinned in
``properties/kcl-2.5.8-jars.sha256`` before every start: a missing, extra or altered jar refuses to start.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shlex
import sys
from pathlib import Path

from consumer.errors import DaemonSetupError
from consumer.settings import InitialPosition, Settings

__all__ = [
    "DAEMON_MAIN_CLASS",
    "PROJECT_ROOT",
    "daemon_command",
    "jar_dir",
    "properties_overrides",
    "render_properties",
    "verify_jars",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROPERTIES_DIR = PROJECT_ROOT / "properties"
JAR_PINS = PROPERTIES_DIR / "kcl-2.5.8-jars.sha256"
PROPERTIES_TEMPLATE = PROPERTIES_DIR / "consumer.properties"
LOGBACK_CONFIG = PROPERTIES_DIR / "logback.xml"
RECORD_PROCESSOR = PROJECT_ROOT / "record_processor.py"
DAEMON_MAIN_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"


def jar_dir() -> Path:
    """Where amazon_kclpy keeps the KCL jars."""
    spec = importlib.util.find_spec("amazon_kclpy")
    if spec is None or spec.origin is None:
        raise DaemonSetupError("amazon_kclpy is not installed: run `make setup` (scripts/install_kclpy.sh)")
    return Path(spec.origin).parent / "jars"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_jars(directory: Path, pins: Path = JAR_PINS) -> int:
    """Check every jar against the pinned list; return how many were verified or raise DaemonSetupError."""
    expected: dict[str, str] = {}
    for line in pins.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[name.strip().lstrip("*")] = digest
    present = {path.name: path for path in directory.glob("*.jar")} if directory.is_dir() else {}
    missing = sorted(set(expected) - set(present))
    extra = sorted(set(present) - set(expected))
    altered = sorted(name for name in set(expected) & set(present) if _sha256(present[name]) != expected[name])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} not pinned (e.g. {extra[0]})")
    if altered:
        problems.append(f"{len(altered)} with a different SHA-256 (e.g. {altered[0]})")
    if problems:
        raise DaemonSetupError(f"KCL jars in {directory} do not match {pins.name}: " + "; ".join(problems))
    return len(expected)


def properties_overrides(settings: Settings, *, python: str = sys.executable) -> dict[str, str | None]:
    """The daemon properties that come from the settings (None: remove the key from the template)."""
    values: dict[str, str | None] = {
        "executableName": f"{python} {RECORD_PROCESSOR}",
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
    """``java -cp <jars>/* MultiLangDaemon --properties-file P --log-configuration L``."""
    return [
        settings.java_bin,
        *shlex.split(settings.kcl_java_opts),
        "-cp",
        f"{jar_dir()}/*",
        DAEMON_MAIN_CLASS,
        "--properties-file",
        str(properties),
        "--log-configuration",
        str(logback),
    ]
