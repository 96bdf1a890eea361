import hashlib
import re
import sys
from pathlib import Path

import pytest

from consumer.errors import DaemonSetupError
from consumer.runtime.daemon import daemon_command, properties_overrides, render_properties
from consumer.runtime.jars import JarLock, read_lock, verify_jars
from consumer.runtime.resources import PROPERTIES_TEMPLATE


def _parse(text: str) -> dict[str, str]:
    pairs = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            assert key.strip() not in pairs, f"duplicate key {key.strip()}"
            pairs[key.strip()] = value.strip()
    return pairs


def test_rendered_properties_take_the_settings_and_keep_the_template(env):
    from consumer.runtime.settings import load_settings

    env.setenv("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:4568")
    env.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:4569")
    env.setenv("KCL_INITIAL_POSITION", "TRIM_HORIZON")
    env.setenv("KCL_WORKER_ID", "pod-1")
    rendered = _parse(
        render_properties(PROPERTIES_TEMPLATE.read_text(), properties_overrides(load_settings(), python="/py"))
    )
    assert rendered["streamName"] == "ride_events"
    assert rendered["applicationName"] == "ride-duration"
    assert rendered["kinesisEndpoint"] == "http://127.0.0.1:4568"
    assert rendered["dynamoDBEndpoint"] == "http://127.0.0.1:4569"
    assert rendered["initialPositionInStream"] == "TRIM_HORIZON"
    assert rendered["workerId"] == "pod-1"
    assert rendered["metricsLevel"] == "NONE"
    assert rendered["executableName"].startswith("/py ") and rendered["executableName"].endswith("record_processor.py")
    assert rendered["retrievalMode"] == "POLLING"
    assert int(rendered["shutdownGraceMillis"]) > 0
    assert int(rendered["timeoutInSeconds"]) > 0


def test_at_timestamp_is_rendered_as_epoch_seconds_without_the_plain_position(env):
    from consumer.runtime.settings import load_settings

    env.setenv("KCL_INITIAL_POSITION", "AT_TIMESTAMP")
    env.setenv("KCL_INITIAL_TIMESTAMP", "2022-01-25T00:00:00Z")
    rendered = _parse(render_properties(PROPERTIES_TEMPLATE.read_text(), properties_overrides(load_settings())))
    assert rendered["initialPositionInStreamExtended"] == "1643068800"
    assert "initialPositionInStream" not in rendered


def test_keys_missing_from_the_template_are_appended_and_others_kept():
    text = render_properties("# comment\nfoo = 1\nstreamName = old\n", {"streamName": "new", "extra": "2"})
    assert text == "# comment\nfoo = 1\nstreamName = new\nextra = 2\n"


def _jars(tmp_path: Path, contents: dict[str, bytes]) -> tuple[Path, JarLock]:
    """A jar folder holding ``contents`` (artifact -> bytes, version 1.0 in group org.example) and its lock."""
    jars = tmp_path / "jars"
    jars.mkdir()
    lines = ["# kcl: 9.9.9"]
    for artifact, data in contents.items():
        (jars / f"{artifact}-1.0.jar").write_bytes(data)
        lines.append(f"org.example:{artifact}:1.0 {hashlib.sha256(data).hexdigest()}")
    lock = tmp_path / "test.lock"
    lock.write_text("\n".join(lines) + "\n")
    return jars, read_lock(lock)


def test_jars_matching_the_lock_verify(tmp_path):
    jars, lock = _jars(tmp_path, {"a": b"a", "b": b"b"})
    assert verify_jars(jars, lock) == 2
    assert lock.kcl_version == "9.9.9"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda jars: (jars / "a-1.0.jar").write_bytes(b"tampered"),
            "SHA-256 other than the locked one: org.example:a:1.0",
        ),
        (lambda jars: (jars / "a-1.0.jar").unlink(), "missing: org.example:a:1.0"),
        (lambda jars: (jars / "evil.jar").write_bytes(b"x"), "not in the lock: evil.jar"),
    ],
)
def test_a_tampered_missing_or_extra_jar_refuses_to_start_naming_it(tmp_path, change, message):
    jars, lock = _jars(tmp_path, {"a": b"a", "b": b"b"})
    change(jars)
    with pytest.raises(DaemonSetupError, match=re.escape(message)):
        verify_jars(jars, lock)


def test_a_missing_jar_folder_names_the_setting(tmp_path):
    _, lock = _jars(tmp_path, {"a": b"a"})
    with pytest.raises(DaemonSetupError, match=r"KCL_JAR_DIR=.*does not exist"):
        verify_jars(tmp_path / "nowhere", lock)


def test_a_lock_line_that_is_not_coordinates_and_a_hash_is_refused_with_its_line(tmp_path):
    lock = tmp_path / "bad.lock"
    lock.write_text("# kcl: 3\norg.example:a:1.0 " + "0" * 64 + "\norg.example:b:1.0 not-a-hash\n")
    with pytest.raises(DaemonSetupError, match=r"bad\.lock:3"):
        read_lock(lock)


def test_the_daemon_runs_on_the_jars_of_kcl_jar_dir(env, tmp_path):
    from consumer.runtime.settings import load_settings

    env.setenv("KCL_JAR_DIR", str(tmp_path / "jars"))
    command = daemon_command(load_settings(), tmp_path / "p.properties")
    assert command[command.index("-cp") + 1] == f"{tmp_path / 'jars'}/*"


def test_the_daemon_runs_on_the_runtime_linked_next_to_the_environment_by_default(env, tmp_path):
    from consumer.runtime.settings import load_settings

    command = daemon_command(load_settings(), tmp_path / "p.properties")
    assert command[0] == str(Path(sys.prefix) / "share" / "kcl-jre" / "bin" / "java")


def test_a_java_bin_that_is_not_an_executable_stops_start_up_naming_the_setting(env, tmp_path):
    from consumer.runtime.launcher import prepare_daemon
    from consumer.runtime.settings import load_settings

    env.setenv("JAVA_BIN", str(tmp_path / "no-java"))
    with pytest.raises(DaemonSetupError, match=r"JAVA_BIN='.*no-java' is not an executable"):
        prepare_daemon(load_settings())


def test_the_template_names_credentials_the_way_kcl_2_7_reads_them():
    rendered = _parse(PROPERTIES_TEMPLATE.read_text())
    # KCL 2.7+ resolves SDK v2 names only; KCL 2.5's DefaultAWSCredentialsProviderChain makes the daemon exit 1.
    assert rendered["AwsCredentialsProvider"] == "DefaultCredentialsProvider"
    assert "AWSCredentialsProvider" not in rendered


def test_extra_properties_from_json_win_over_the_template(env):
    from consumer.runtime.settings import load_settings

    env.setenv("KCL_EXTRA_PROPERTIES", '{"shardSyncIntervalMillis": "10000", "maxLeasesForWorker": "4"}')
    rendered = _parse(render_properties(PROPERTIES_TEMPLATE.read_text(), properties_overrides(load_settings())))
    assert rendered["shardSyncIntervalMillis"] == "10000"
    assert rendered["maxLeasesForWorker"] == "4"


def test_an_extra_property_that_would_break_the_file_is_refused(env):
    from consumer.runtime.settings import load_settings

    env.setenv("KCL_EXTRA_PROPERTIES", '{"streamName": "x\\nexecutableName = /bin/evil"}')
    with pytest.raises(DaemonSetupError, match="streamName"):
        properties_overrides(load_settings())
