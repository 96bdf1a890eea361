"""Installing the KCL jars (consumer/runtime/jarfetch.py) from a Maven repository laid out like Maven Central: here a
file:// repository in a temporary folder, the same code path as https (urllib)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from consumer.errors import DaemonSetupError
from consumer.runtime.jarfetch import fetch_jars, main
from consumer.runtime.jars import JarLock, read_lock, verify_jars

JARS = {("org.example", "alpha", "1.0"): b"alpha bytes", ("com.example.deep", "beta", "2.3.Final"): b"beta bytes"}


def repository(tmp_path: Path, jars: dict[tuple[str, str, str], bytes] = JARS) -> tuple[str, JarLock]:
    """A file:// Maven repository holding ``jars`` and a lock pinning them."""
    root = tmp_path / "repo"
    lines = ["# kcl: 3.0.0"]
    for (group, artifact, version), data in jars.items():
        path = root / group.replace(".", "/") / artifact / version / f"{artifact}-{version}.jar"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        lines.append(f"{group}:{artifact}:{version} {hashlib.sha256(data).hexdigest()}")
    lock = tmp_path / "jars.lock"
    lock.write_text("\n".join(lines) + "\n")
    return root.as_uri(), read_lock(lock)


def test_the_locked_jars_are_downloaded_verified_and_installed(tmp_path):
    url, lock = repository(tmp_path)
    dest = tmp_path / "share" / "kcl-jars"
    assert fetch_jars(lock, dest, repository=url) == 2
    assert sorted(path.name for path in dest.iterdir()) == ["alpha-1.0.jar", "beta-2.3.Final.jar"]
    assert verify_jars(dest, lock) == 2


def test_a_verified_set_in_place_is_not_downloaded_again(tmp_path):
    url, lock = repository(tmp_path)
    dest = tmp_path / "jars"
    fetch_jars(lock, dest, repository=url)
    messages: list[str] = []
    assert fetch_jars(lock, dest, repository=(tmp_path / "gone").as_uri(), say=messages.append) == 2
    assert messages == [f"2 KCL jars already in place and verified in {dest}"]


def test_a_jar_with_another_hash_stops_the_install_naming_it_and_leaves_the_folder_as_it_was(tmp_path):
    url, lock = repository(tmp_path)
    dest = tmp_path / "jars"
    dest.mkdir()
    (dest / "old.jar").write_bytes(b"what was there")
    (tmp_path / "repo/com/example/deep/beta/2.3.Final/beta-2.3.Final.jar").write_bytes(b"tampered on the server")
    with pytest.raises(DaemonSetupError, match=re.escape("com.example.deep:beta:2.3.Final: ") + ".*SHA-256"):
        fetch_jars(lock, dest, repository=url)
    assert [path.name for path in dest.iterdir()] == ["old.jar"]
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".jars")] == [], "no staging left"


def test_a_jar_the_repository_lacks_is_named_with_its_url(tmp_path):
    url, lock = repository(tmp_path)
    (tmp_path / "repo/org/example/alpha/1.0/alpha-1.0.jar").unlink()
    with pytest.raises(DaemonSetupError, match=r"org\.example:alpha:1\.0: cannot download .*alpha-1\.0\.jar"):
        fetch_jars(lock, tmp_path / "jars", repository=url)


def test_the_cache_serves_a_second_install_without_the_repository(tmp_path):
    url, lock = repository(tmp_path)
    cache = tmp_path / "cache"
    fetch_jars(lock, tmp_path / "first", repository=url, cache=cache)
    assert (cache / "org/example/alpha/1.0/alpha-1.0.jar").read_bytes() == b"alpha bytes"
    assert fetch_jars(lock, tmp_path / "second", repository=(tmp_path / "gone").as_uri(), cache=cache) == 2


def test_a_cached_jar_that_no_longer_verifies_is_downloaded_again(tmp_path):
    url, lock = repository(tmp_path)
    cache = tmp_path / "cache"
    fetch_jars(lock, tmp_path / "first", repository=url, cache=cache)
    (cache / "org/example/alpha/1.0/alpha-1.0.jar").write_bytes(b"rotten")
    assert fetch_jars(lock, tmp_path / "second", repository=url, cache=cache) == 2
    assert (cache / "org/example/alpha/1.0/alpha-1.0.jar").read_bytes() == b"alpha bytes"


@pytest.mark.parametrize("bad", ["repo.maven.apache.org/maven2", "ftp://host/maven2", "https://"])
def test_a_repository_that_is_not_a_url_names_the_setting(tmp_path, bad):
    _, lock = repository(tmp_path)
    with pytest.raises(DaemonSetupError, match="KCL_MAVEN_REPOSITORY"):
        fetch_jars(lock, tmp_path / "jars", repository=bad)


def test_the_command_reads_its_defaults_from_the_environment_and_fails_with_1(tmp_path, monkeypatch, capsys):
    url, lock = repository(tmp_path)
    monkeypatch.setenv("KCL_JAR_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("KCL_MAVEN_REPOSITORY", url)
    assert main(["--lock", str(lock.path)]) == 0
    assert verify_jars(tmp_path / "from-env", lock) == 2
    monkeypatch.setenv("KCL_MAVEN_REPOSITORY", "not a url")
    assert main(["--lock", str(lock.path), "--dest", str(tmp_path / "other")]) == 1
    assert "KCL_MAVEN_REPOSITORY" in capsys.readouterr().err
