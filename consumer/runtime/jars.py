"""The KCL MultiLangDaemon's jars: where they are and whether they are exactly the pinned ones.

The jars come with amazon_kclpy (``amazon_kclpy/jars``). They are checked against the SHA-256 list pinned in
``properties/`` before every start: a missing, extra or altered jar refuses to start.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from consumer.errors import DaemonSetupError
from consumer.runtime.resources import JAR_PINS

__all__ = ["jar_dir", "verify_jars"]


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
