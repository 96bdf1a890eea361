"""The two performance settings: the fork server is on by default; the benchmark's null sink cannot be turned on
against a real Kinesis endpoint."""

import pytest

from consumer.errors import SettingsError
from consumer.pipeline.sink import Entry, NullSink
from consumer.runtime.settings import load_settings


def test_shards_are_forked_from_the_fork_server_unless_turned_off(env):
    assert load_settings().shard_fork_server is True
    env.setenv("SHARD_FORK_SERVER", "false")
    assert load_settings().shard_fork_server is False


def test_output_is_never_discarded_by_default(env):
    assert load_settings().bench_discard_output is False


@pytest.mark.parametrize("endpoint", [None, "https://kinesis.us-east-1.amazonaws.com", "http://10.0.0.5:4567"])
def test_discarding_output_is_refused_unless_kinesis_is_a_local_emulator(env, endpoint):
    env.setenv("BENCH_DISCARD_OUTPUT", "true")
    if endpoint is None:
        env.delenv("AWS_ENDPOINT_URL_KINESIS", raising=False)
    else:
        env.setenv("AWS_ENDPOINT_URL_KINESIS", endpoint)

    with pytest.raises(SettingsError, match="BENCH_DISCARD_OUTPUT=true drops every prediction"):
        load_settings()


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4567", "http://localhost:4567", "http://[::1]:4567"])
def test_discarding_output_is_accepted_against_a_loopback_emulator(env, endpoint):
    env.setenv("BENCH_DISCARD_OUTPUT", "1")
    env.setenv("AWS_ENDPOINT_URL_KINESIS", endpoint)

    assert load_settings().bench_discard_output is True


def test_null_sink_counts_what_it_drops_and_still_refuses_an_oversized_record():
    sink = NullSink("predictions")

    results = sink.put([Entry(b"{}", "1"), Entry(b"{}", "2")])

    assert sink.discarded == 2 and len(results) == 2
    with pytest.raises(ValueError, match="1 MiB"):
        sink.put([Entry(b"x" * (1024 * 1024 + 1), "k")])
