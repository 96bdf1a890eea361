"""Write the KCL jar lock (properties/kcl-jars.lock) from an amazon-kclpy release's pom, with Maven's resolution.

    python scripts/kcl_lock.py [--wrapper kcl/pom.xml] [--out properties/kcl-jars.lock]
                               [--kclpy VERSION --sdist-sha256 HASH]

1. downloads the amazon-kclpy sdist (pip, hash-checked: by default the version and sha256 Pipfile.lock pins) into
   .cache/kclpy/;
2. writes its pom.xml, with a groupId/artifactId/version added so that it can be a parent, next to a copy of the
   wrapper pom (kcl/pom.xml: the parent plus the security overrides) in a temporary folder;
3. runs ``mvn dependency:list`` on the wrapper (runtime scope, the pom's direct dependencies only, checksums
   strict), which downloads the jars into Maven's local repository with whatever configuration the user's Maven
   has (settings.xml, mirrors): nothing about a repository is written here;
4. writes one ``group:artifact:version sha256`` line per jar, sorted, under a header naming the amazon-kclpy
   release, its sdist's sha256 and the KCL version.

Needs ``mvn`` (Maven 3.6+) and pip; only the lock's maintainer runs it (`make kcl-lock`): installing the jars
(``python -m consumer.runtime.jarfetch``) needs neither. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POM_NS = "{http://maven.apache.org/POM/4.0.0}"
#: Pinned: Maven's default dependency plugin is older and lacks outputAbsoluteArtifactFilename on `list`.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
#: The coordinates scripts/kcl_lock.py gives the sdist's pom (the wrapper's <parent> names them).
PARENT_GROUP, PARENT_ARTIFACT = "amazon-kclpy.sdist", "amazon-kclpy"
MULTILANG = "software.amazon.kinesis:amazon-kinesis-client-multilang"


class LockError(Exception):
    """The lock cannot be written; the message says why."""


def pinned_kclpy(pipfile_lock: Path) -> tuple[str, str]:
    """(version, sdist sha256) of amazon-kclpy in Pipfile.lock's default section."""
    entry = json.loads(pipfile_lock.read_text())["default"].get("amazon-kclpy")
    if not entry or not entry.get("version", "").startswith("=="):
        raise LockError(f"{pipfile_lock} does not pin amazon-kclpy")
    hashes = [digest.removeprefix("sha256:") for digest in entry.get("hashes", [])]
    if len(hashes) != 1:
        raise LockError(f"{pipfile_lock}: expected one sha256 for amazon-kclpy (its sdist), found {len(hashes)}")
    return entry["version"].removeprefix("=="), hashes[0]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist(version: str, digest: str, cache: Path) -> Path:
    """The amazon-kclpy sdist, downloaded by pip into ``cache`` with its hash checked (reused when it verifies)."""
    sdist = cache / f"amazon_kclpy-{version}.tar.gz"
    if sdist.is_file() and sha256(sdist) == digest:
        return sdist
    cache.mkdir(parents=True, exist_ok=True)
    requirement = cache / f"amazon-kclpy-{version}.requirement.txt"
    requirement.write_text(f"amazon-kclpy=={version} --hash=sha256:{digest}\n")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    command += ["--require-hashes", "--disable-pip-version-check", "-d", str(cache), "-r", str(requirement)]
    if subprocess.run(command, check=False).returncode != 0 or not sdist.is_file() or sha256(sdist) != digest:
        raise LockError(f"could not download amazon-kclpy {version} with sha256 {digest}")
    return sdist


def parent_pom(sdist: Path, version: str) -> str:
    """The sdist's pom.xml with the coordinates a parent needs, inserted after <modelVersion>."""
    with tarfile.open(sdist) as archive:
        member = archive.extractfile(f"amazon_kclpy-{version}/pom.xml")
        if member is None:
            raise LockError(f"{sdist.name} has no pom.xml")
        text = member.read().decode("utf-8")
    coordinates = (
        f"<groupId>{PARENT_GROUP}</groupId><artifactId>{PARENT_ARTIFACT}</artifactId>"
        f"<version>{version}</version><packaging>pom</packaging>"
    )
    text, count = re.subn(r"(<modelVersion>4\.0\.0</modelVersion>)", rf"\1{coordinates}", text, count=1)
    if count != 1:
        raise LockError(f"{sdist.name}: pom.xml has no <modelVersion>4.0.0</modelVersion>")
    return text


def check_wrapper(wrapper: Path, version: str) -> None:
    parent = ET.parse(wrapper).getroot().find(f"{POM_NS}parent")
    if parent is None:
        raise LockError(f"{wrapper} has no <parent>")
    named = tuple((parent.findtext(f"{POM_NS}{tag}") or "").strip() for tag in ("groupId", "artifactId", "version"))
    if named != (PARENT_GROUP, PARENT_ARTIFACT, version):
        raise LockError(
            f"{wrapper}: its <parent> is {':'.join(named)}, expected {PARENT_GROUP}:{PARENT_ARTIFACT}:{version} "
            "(the amazon-kclpy release being locked)"
        )


def resolve(folder: Path) -> list[tuple[str, str, str, Path]]:
    """(group, artifact, version, jar in the local repository) of each runtime jar the wrapper depends on directly."""
    listing = folder / "dependencies.txt"
    command = ["mvn", "--batch-mode", "--quiet", "--strict-checksums", "-Dstyle.color=never"]
    command += ["-f", str(folder / "pom.xml"), f"{DEPENDENCY_PLUGIN}:list", "-DincludeScope=runtime"]
    command += ["-DexcludeTransitive=true", "-DoutputAbsoluteArtifactFilename=true", f"-DoutputFile={listing}"]
    if shutil.which("mvn") is None:
        raise LockError("mvn is not on PATH: regenerating the lock needs Maven (Debian: apt-get install maven)")
    if subprocess.run(command, check=False).returncode != 0:
        raise LockError("mvn could not resolve the wrapper pom (its output is above)")
    jars = []
    for line in listing.read_text().splitlines():
        line = line.strip().split(" -- ", 1)[0]
        fields = line.split(":")
        if len(fields) < 6 or fields[2] != "jar":
            continue
        if len(fields) != 6:
            raise LockError(f"a jar with a classifier is not supported by the lock format: {line}")
        group, artifact, _type, version, _scope, path = fields
        jars.append((group, artifact, version, Path(path)))
    if not jars:
        raise LockError(f"mvn listed no jar in {listing}")
    return sorted(jars)


def lock_text(jars: list[tuple[str, str, str, Path]], version: str, digest: str, wrapper: str) -> str:
    kcl = [v for g, a, v, _ in jars if f"{g}:{a}" == MULTILANG]
    if len(kcl) != 1:
        raise LockError(f"the resolved set has no {MULTILANG}")
    lines = [
        "# The KCL MultiLangDaemon's jars: group:artifact:version and the jar's SHA-256, one a line.",
        f"# Generated by `make kcl-lock` (scripts/kcl_lock.py) with Maven's resolution of {wrapper}, whose parent is",
        "# the pom.xml of the amazon-kclpy sdist named below. Do not edit: regenerate it.",
        f"# amazon-kclpy: {version}",
        f"# amazon-kclpy-sdist-sha256: {digest}",
        f"# kcl: {kcl[0]}",
        f"# jars: {len(jars)}",
    ]
    lines += [f"{group}:{artifact}:{jar_version} {sha256(path)}" for group, artifact, jar_version, path in jars]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wrapper", type=Path, default=ROOT / "kcl" / "pom.xml", help="the wrapper pom")
    parser.add_argument("--out", type=Path, default=ROOT / "properties" / "kcl-jars.lock", help="the lock to write")
    parser.add_argument("--kclpy", help="amazon-kclpy version (default: Pipfile.lock's)")
    parser.add_argument("--sdist-sha256", help="sha256 of that version's sdist (default: Pipfile.lock's)")
    args = parser.parse_args(argv)
    try:
        if (args.kclpy is None) != (args.sdist_sha256 is None):
            raise LockError("--kclpy and --sdist-sha256 go together")
        version, digest = (args.kclpy, args.sdist_sha256) if args.kclpy else pinned_kclpy(ROOT / "Pipfile.lock")
        check_wrapper(args.wrapper, version)
        sdist = download_sdist(version, digest, ROOT / ".cache" / "kclpy")
        with tempfile.TemporaryDirectory(prefix="kcl-lock-") as work:
            folder = Path(work)
            (folder / "kclpy-pom.xml").write_text(parent_pom(sdist, version))
            shutil.copyfile(args.wrapper, folder / "pom.xml")
            jars = resolve(folder)
            wrapper_name = (
                str(args.wrapper.resolve().relative_to(ROOT))
                if args.wrapper.resolve().is_relative_to(ROOT)
                else args.wrapper.name
            )
            args.out.write_text(lock_text(jars, version, digest, wrapper_name))
    except LockError as exc:
        print(f"[kcl_lock] ERROR: {exc}", file=sys.stderr)
        return 1
    print(f"[kcl_lock] {args.out}: {len(jars)} jars of amazon-kclpy {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
