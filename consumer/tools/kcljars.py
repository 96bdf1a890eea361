"""The consumer on another KCL version than the one it ships: for the version comparison
(:mod:`consumer.tools.kclcompare`).

The service verifies its jars against the packaged lock only. A development tool that runs another jar set installs
it from that set's lock (:func:`install`, the same installer and download cache as ``make setup``) and starts the
launcher through this module, which hands the launcher that lock instead::

    python -m consumer.tools.kcljars --lock kcl/kclpy-3.1.3/kcl-jars.lock    # with KCL_JAR_DIR set to its jars

Everything else (settings, model, properties, fork server) is ``python -m consumer run``'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consumer.runtime.jarfetch import fetch_jars
from consumer.runtime.jars import JarLock, read_lock
from consumer.runtime.resources import JAR_LOCK
from consumer.tools.paths import REPO_ROOT

__all__ = ["KCL3_LOCK", "SHIPPED_LOCK", "install", "launcher_command", "main"]

#: The shipped jars (KCL 2.7.2).
SHIPPED_LOCK = JAR_LOCK
#: KCL 3.1.3, the newest 3.x that resolves (amazon-kclpy 3.1.3), with the same security overrides:
#: `make kcl-lock-compare`.
KCL3_LOCK = REPO_ROOT / "kcl" / "kclpy-3.1.3" / "kcl-jars.lock"
#: Verified downloads, shared with `make setup`.
JAR_CACHE = REPO_ROOT / ".cache" / "kcl-jars"


def install(lock: Path, dest: Path) -> JarLock:
    """The jars of ``lock`` in ``dest``, verified (downloaded into the shared cache when they are not there yet)."""
    parsed = read_lock(lock)
    fetch_jars(parsed, dest, cache=JAR_CACHE)
    return parsed


def launcher_command(lock: Path) -> list[str]:
    """The command that starts the consumer on the jars of ``lock`` (``KCL_JAR_DIR`` must point at them)."""
    return [sys.executable, "-m", "consumer.tools.kcljars", "--lock", str(lock)]


def main(argv: list[str] | None = None) -> int:
    from consumer.errors import ConsumerError
    from consumer.runtime.launcher import run
    from consumer.runtime.logs import configure_logging
    from consumer.runtime.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m consumer.tools.kcljars", description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, required=True, help="the lock of the jars in KCL_JAR_DIR")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, component="launcher")
        return run(settings, jar_lock=read_lock(args.lock))
    except ConsumerError as exc:
        print(f"consumer: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
