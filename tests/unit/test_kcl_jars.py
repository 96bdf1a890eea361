"""The KCL jar sets (properties/kcl-jars.lock, shipped; kcl/kclpy-3.1.3/kcl-jars.lock, the version comparison's):
at or above the versions that fix the known vulnerabilities of the old 2.5.8 set, no AWS SDK for Java v1, and the
shipped lock consistent with the amazon-kclpy release Pipfile.lock pins and the wrapper pom it was resolved from. A
downgrade in a regenerated lock fails here."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from consumer.runtime.jars import JarLock, JarPin, read_lock
from consumer.tools.kcljars import KCL3_LOCK
from consumer.tools.paths import REPO_ROOT

#: (what, does a jar belong to it, the first version with the fix, the advisory).
FIXED_IN = [
    ("protobuf-java", lambda pin: pin.artifact == "protobuf-java", "3.25.5", "CVE-2024-7254"),
    ("netty", lambda pin: pin.group == "io.netty", "4.1.118", "CVE-2025-24970"),
    ("logback", lambda pin: pin.group == "ch.qos.logback", "1.3.16", "CVE-2024-12798, CVE-2024-12801, CVE-2025-11226"),
    ("commons-lang3", lambda pin: pin.artifact == "commons-lang3", "3.18.0", "CVE-2025-48924"),
    ("commons-beanutils", lambda pin: pin.artifact == "commons-beanutils", "1.11.0", "CVE-2025-48734"),
]


def version_key(version: str) -> tuple[int, ...]:
    """Maven versions of these jars compared by their numbers: 4.2.7.Final -> (4, 2, 7), 32.1.1-jre -> (32, 1, 1)."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def problems(pins: tuple[JarPin, ...]) -> list[str]:
    found = []
    for name, belongs, fixed, advisory in FIXED_IN:
        matching = [pin for pin in pins if belongs(pin)]
        if not matching:
            found.append(f"{name}: not in the set (the check would prove nothing)")
        found += [
            f"{pin.coordinates} is below {fixed} ({advisory})"
            for pin in matching
            if version_key(pin.version) < version_key(fixed)
        ]
    found += [
        f"{pin.coordinates}: the AWS SDK for Java v1 (end of support 2025-12-31)"
        for pin in pins
        if pin.group == "com.amazonaws" and pin.artifact.startswith("aws-java-sdk")
    ]
    return found


@pytest.mark.parametrize("lock", [read_lock(), read_lock(KCL3_LOCK)], ids=["shipped", "kcl3-comparison"])
def test_every_jar_is_at_or_above_its_fixed_version_and_no_sdk_v1(lock: JarLock):
    assert problems(lock.pins) == []


def test_a_downgraded_or_sdk_v1_jar_is_caught():
    pins = read_lock().pins
    downgraded = tuple(
        JarPin(pin.group, pin.artifact, "1.3.14", pin.sha256) if pin.group == "ch.qos.logback" else pin for pin in pins
    )
    sdk_v1 = (*pins, JarPin("com.amazonaws", "aws-java-sdk-core", "1.12.668", "0" * 64))
    assert any("logback-classic:1.3.14 is below 1.3.16" in problem for problem in problems(downgraded))
    assert any("aws-java-sdk-core" in problem for problem in problems(sdk_v1))


def test_the_lock_is_the_amazon_kclpy_release_pipfile_lock_pins():
    lock = read_lock()
    entry = json.loads((REPO_ROOT / "Pipfile.lock").read_text())["default"]["amazon-kclpy"]
    assert entry["version"] == f"=={lock.kclpy_version}"
    assert entry["hashes"] == [f"sha256:{lock.header['amazon-kclpy-sdist-sha256']}"]
    multilang = [pin for pin in lock.pins if pin.artifact == "amazon-kinesis-client-multilang"]
    assert [pin.version for pin in multilang] == [lock.kcl_version]
    assert int(lock.header["jars"]) == len(lock.pins)
    parent = ET.parse(REPO_ROOT / "kcl" / "pom.xml").getroot().find("{http://maven.apache.org/POM/4.0.0}parent")
    assert parent is not None and parent.findtext("{http://maven.apache.org/POM/4.0.0}version") == lock.kclpy_version


def test_the_shipped_set_is_kcl_2_7_on_the_sdk_v2_only():
    """KCL 2.7 names its credentials providers the SDK v2 way and its classes call no SDK v1 class (amazon-kclpy
    2.2.3's pom still lists aws-java-sdk-core and -sts; kcl/pom.xml leaves them out); KCL 3's leader lock client
    (com.amazonaws:dynamodb-lock-client) is not in the set either."""
    lock = read_lock()
    assert version_key(lock.kcl_version) >= (2, 7)
    assert [pin.coordinates for pin in lock.pins if pin.group.startswith("com.amazonaws")] == []
