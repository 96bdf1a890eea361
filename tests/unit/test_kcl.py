import hashlib
from pathlib import Path

import pytest

from consumer.errors import DaemonSetupError
from consumer.runtime.daemon import properties_overrides, render_properties
from consumer.runtime.jars import verify_jars
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


def _jars(tmp_path: Path, contents: dict[str, bytes]) -> tuple[Path, Path]:
    jars = tmp_path / "jars"
    jars.mkdir()
    for name, data in contents.items():
        (jars / name).write_bytes(data)
    pins = tmp_path / "pins.sha256"
    pins.write_text("".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in contents.items()))
    return jars, pins


def test_jars_matching_the_pins_verify(tmp_path):
    jars, pins = _jars(tmp_path, {"a.jar": b"a", "b.jar": b"b"})
    assert verify_jars(jars, pins) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda jars: (jars / "a.jar").write_bytes(b"tampered"), "different SHA-256"),
        (lambda jars: (jars / "a.jar").unlink(), "missing"),
        (lambda jars: (jars / "evil.jar").write_bytes(b"x"), "not pinned"),
    ],
)
def test_a_tampered_missing_or_extra_jar_refuses_to_start(tmp_path, change, message):
    jars, pins = _jars(tmp_path, {"a.jar": b"a", "b.jar": b"b"})
    change(jars)
    with pytest.raises(DaemonSetupError, match=message):
        verify_jars(jars, pins)


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
