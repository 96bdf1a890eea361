"""Install the KCL jars of the lock: download each from a Maven repository, check its SHA-256, put the set in place.

    python -m consumer.runtime.jarfetch [--dest DIR] [--repository URL] [--cache DIR] [--lock FILE]

``make setup`` and the image's build stage run it; the launcher only verifies (:mod:`consumer.runtime.jars`). Every
jar comes from ``<repository>/<group path>/<artifact>/<version>/<artifact>-<version>.jar``: Maven Central by
default, or the repository ``KCL_MAVEN_REPOSITORY`` names (an http(s) or file URL, e.g. a company mirror; nothing
about it is written anywhere). A jar whose SHA-256 is not the locked one, or that cannot be downloaded, stops the
install with a message naming it (``group:artifact:version``) and the URL; the destination is then left as it was.
The new set is assembled next to the destination and renamed over it, so a reader never sees half of it.

With ``--cache`` verified downloads are kept in a Maven-like tree and reused (``make setup`` uses ``.cache/``).
Standard library only (urllib; ``SSL_CERT_FILE`` names a CA bundle for a TLS-intercepting proxy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from consumer.errors import DaemonSetupError
from consumer.runtime.jars import JarLock, JarPin, default_jar_dir, file_sha256, read_lock, verify_jars
from consumer.runtime.resources import JAR_LOCK

__all__ = ["DEFAULT_REPOSITORY", "check_repository", "fetch_jars", "main"]

#: Maven Central.
DEFAULT_REPOSITORY = "https://repo.maven.apache.org/maven2"
_ATTEMPTS = 3
_TIMEOUT_SECONDS = 60


def check_repository(url: str) -> str:
    """``url`` without a trailing slash, or DaemonSetupError naming KCL_MAVEN_REPOSITORY."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("https", "http", "file") or (parsed.scheme != "file" and not parsed.netloc):
        raise DaemonSetupError(f"KCL_MAVEN_REPOSITORY: expected an https://, http:// or file:// URL (got {url!r})")
    return url.rstrip("/")


def _download(url: str, target: Path) -> None:
    """``url`` into ``target``; a few attempts for transient network errors, none for an HTTP 4xx."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response, target.open("wb") as out:
                shutil.copyfileobj(response, out)
            return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == _ATTEMPTS:
                raise
        except (urllib.error.URLError, OSError):
            if attempt == _ATTEMPTS:
                raise
        time.sleep(2.0 * attempt)


def _fetch(pin: JarPin, repository: str, folder: Path, cache: Path | None) -> Path:
    """A verified copy of ``pin`` in ``folder`` (from the cache when it holds one)."""
    target = folder / pin.file_name
    cached = cache / pin.repository_path if cache is not None else None
    if cached is not None and cached.is_file() and file_sha256(cached) == pin.sha256:
        shutil.copyfile(cached, target)
        return target
    url = f"{repository}/{pin.repository_path}"
    try:
        _download(url, target)
    except (urllib.error.URLError, OSError) as exc:
        raise DaemonSetupError(f"{pin.coordinates}: cannot download {url}: {exc}") from exc
    actual = file_sha256(target)
    if actual != pin.sha256:
        raise DaemonSetupError(
            f"{pin.coordinates}: {url} has SHA-256 {actual}, the lock says {pin.sha256}; refusing to install it"
        )
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, cached)
    return target


def fetch_jars(
    lock: JarLock,
    dest: Path,
    *,
    repository: str = DEFAULT_REPOSITORY,
    cache: Path | None = None,
    say: Callable[[str], None] = lambda _message: None,
) -> int:
    """Make ``dest`` hold exactly the jars of ``lock``; return how many. Nothing is downloaded when it already does."""
    repository = check_repository(repository)
    try:
        count = verify_jars(dest, lock)
    except DaemonSetupError:
        pass
    else:
        say(f"{count} KCL jars already in place and verified in {dest}")
        return count
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        say(f"installing the {len(lock.pins)} KCL jars of {lock.path.name} (KCL {lock.kcl_version}) into {dest}")
        for pin in lock.pins:
            _fetch(pin, repository, staging, cache)
        staging.chmod(0o755)
        verify_jars(staging, lock)
        previous = dest.with_name(f".{dest.name}-previous")
        shutil.rmtree(previous, ignore_errors=True)
        if dest.exists():
            dest.rename(previous)
        staging.rename(dest)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return verify_jars(dest, lock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumer.runtime.jarfetch", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dest",
        type=Path,
        default=Path(os.environ["KCL_JAR_DIR"]) if os.environ.get("KCL_JAR_DIR") else default_jar_dir(),
        help="where the jars go (default: $KCL_JAR_DIR, else <environment>/share/kcl-jars)",
    )
    parser.add_argument(
        "--repository",
        default=os.environ.get("KCL_MAVEN_REPOSITORY") or DEFAULT_REPOSITORY,
        help=f"Maven repository base URL (default: $KCL_MAVEN_REPOSITORY, else {DEFAULT_REPOSITORY})",
    )
    parser.add_argument("--cache", type=Path, default=None, help="keep verified downloads here and reuse them")
    parser.add_argument("--lock", type=Path, default=JAR_LOCK, help="the lock (default: the packaged one)")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(f"[kcl-jars] {message}", file=sys.stderr, flush=True)

    try:
        count = fetch_jars(read_lock(args.lock), args.dest, repository=args.repository, cache=args.cache, say=say)
    except DaemonSetupError as exc:
        say(f"ERROR: {exc}")
        return 1
    say(f"{count} KCL jars verified in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
