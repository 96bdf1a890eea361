"""The KCL MultiLangDaemon's jars: the lock that pins them, where they are installed, and whether they are exactly
the locked ones.

``properties/kcl-jars.lock`` (shipped with the package, written by ``make kcl-lock``) names every jar by
``group:artifact:version`` with its SHA-256, under a header naming the amazon-kclpy release and the KCL version.
:mod:`consumer.runtime.jarfetch` installs the jars into ``KCL_JAR_DIR``; the launcher checks that folder against the
lock before every start. A missing, extra or altered jar refuses to start, naming the jar.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from consumer.errors import DaemonSetupError
from consumer.runtime.resources import JAR_LOCK

__all__ = ["JarLock", "JarPin", "default_jar_dir", "default_java_bin", "file_sha256", "read_lock", "verify_jars"]

_HEADER = re.compile(r"^#\s*([a-z0-9-]+):\s*(\S+)\s*$")
_PIN = re.compile(r"^([\w.-]+):([\w.-]+):([\w.+-]+)\s+([0-9a-f]{64})$")


@dataclass(frozen=True)
class JarPin:
    """One locked jar: its Maven coordinates and the SHA-256 of its file."""

    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def coordinates(self) -> str:
        """``group:artifact:version``, the name every message uses."""
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def file_name(self) -> str:
        """The file name in Maven repositories and in the jar folder: ``artifact-version.jar``."""
        return f"{self.artifact}-{self.version}.jar"

    @property
    def repository_path(self) -> str:
        """Where a Maven repository (Maven Central's layout) keeps the jar, relative to its base URL."""
        return f"{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"


@dataclass(frozen=True)
class JarLock:
    """A lock file: its header (``amazon-kclpy``, ``kcl``, ...) and its jars."""

    path: Path
    header: Mapping[str, str]
    pins: tuple[JarPin, ...]

    @property
    def kcl_version(self) -> str:
        return self.header.get("kcl", "?")

    @property
    def kclpy_version(self) -> str:
        return self.header.get("amazon-kclpy", "?")


def read_lock(path: Path = JAR_LOCK) -> JarLock:
    """Parse a lock file; DaemonSetupError names the line that is not ``group:artifact:version sha256``."""
    header: dict[str, str] = {}
    pins: list[JarPin] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DaemonSetupError(f"cannot read the KCL jar lock {path}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if match := _HEADER.match(stripped):
                header[match[1]] = match[2]
            continue
        match = _PIN.match(stripped)
        if match is None:
            raise DaemonSetupError(f"{path}:{number}: not 'group:artifact:version sha256': {stripped[:120]!r}")
        pins.append(JarPin(*match.groups()))
    names = [pin.file_name for pin in pins]
    if not pins or len(set(names)) != len(names):
        raise DaemonSetupError(f"{path}: no jars, or two jars with the same file name")
    return JarLock(path, header, tuple(pins))


def default_jar_dir() -> Path:
    """``<environment>/share/kcl-jars``: next to the Python environment that runs the launcher (``.venv`` in a
    checkout, ``/opt/venv`` in the image), where ``make setup`` and the image build install the jars."""
    return Path(sys.prefix) / "share" / "kcl-jars"


def default_java_bin() -> Path:
    """``<environment>/share/kcl-jre/bin/java``: the Java runtime cut to the daemon's modules (jlink over
    scripts/jre-modules.txt), which ``make setup`` and the image build link next to the jars."""
    return Path(sys.prefix) / "share" / "kcl-jre" / "bin" / "java"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _named(pins: list[JarPin]) -> str:
    shown = ", ".join(f"{pin.coordinates} ({pin.file_name})" for pin in pins[:5])
    return shown + (f" and {len(pins) - 5} more" if len(pins) > 5 else "")


def verify_jars(directory: Path, lock: JarLock | None = None) -> int:
    """Check that ``directory`` holds exactly the locked jars, each with its SHA-256; return how many, or raise
    DaemonSetupError naming every missing, altered or unlocked jar (the first few of each)."""
    lock = lock or read_lock()
    if not directory.is_dir():
        raise DaemonSetupError(
            f"KCL_JAR_DIR={directory} does not exist: install the {len(lock.pins)} KCL jars of {lock.path.name} "
            "there (`make setup`, or python -m consumer.runtime.jarfetch)"
        )
    present = {path.name: path for path in directory.iterdir() if path.suffix.lower() == ".jar"}
    missing = [pin for pin in lock.pins if pin.file_name not in present]
    altered = [
        pin for pin in lock.pins if pin.file_name in present and file_sha256(present[pin.file_name]) != pin.sha256
    ]
    unlocked = sorted(set(present) - {pin.file_name for pin in lock.pins})
    problems = []
    if missing:
        problems.append(f"missing: {_named(missing)}")
    if altered:
        problems.append(f"a SHA-256 other than the locked one: {_named(altered)}")
    if unlocked:
        problems.append(f"not in the lock: {', '.join(unlocked[:5])}")
    if problems:
        raise DaemonSetupError(
            f"the KCL jars in KCL_JAR_DIR={directory} are not the ones {lock.path.name} pins; "
            + "; ".join(problems)
            + " (reinstall them: `make setup`, or python -m consumer.runtime.jarfetch)"
        )
    return len(lock.pins)
