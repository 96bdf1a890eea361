import pytest

from consumer.errors import SettingsError
from consumer.model.trust import DEFAULT_TRUSTED_TYPES
from consumer.runtime.settings import InitialPosition, load_settings


def test_settings_come_from_the_environment(env):
    env.setenv("TEST_RUN", "true")
    settings = load_settings()
    assert settings.input_stream_name == "ride_events"
    assert settings.test_run is True
    assert settings.kcl_initial_position is InitialPosition.LATEST
    assert settings.daemon_metrics_level == "SUMMARY"


def test_an_endpoint_override_turns_the_daemons_cloudwatch_metrics_off(env):
    env.setenv("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:4568")
    assert load_settings().daemon_metrics_level == "NONE"


def test_aws_default_region_is_accepted(env):
    env.delenv("AWS_REGION")
    env.setenv("AWS_DEFAULT_REGION", "us-east-2")
    assert load_settings().aws_region == "us-east-2"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INPUT_STREAM_NAME", ""),
        ("PREDICTIONS_STREAM_NAME", "has space"),
        ("KCL_INITIAL_POSITION", "EARLIEST"),
        ("AWS_ENDPOINT_URL_KINESIS", "not a url"),
        ("KCL_MAX_RECORDS", "20000"),
        ("TEST_RUN", "maybe"),
        ("BATCH_DEADLINE_SECONDS", "0"),
        ("ALLOW_PICKLE_MODELS", "perhaps"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(env, name, value):
    env.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_a_missing_setting_is_named(env):
    env.delenv("MODEL_URI")
    with pytest.raises(SettingsError, match="MODEL_URI: Field required"):
        load_settings()


def test_at_timestamp_needs_a_timestamp(env):
    env.setenv("KCL_INITIAL_POSITION", "AT_TIMESTAMP")
    with pytest.raises(SettingsError, match="KCL_INITIAL_TIMESTAMP"):
        load_settings()
    env.setenv("KCL_INITIAL_TIMESTAMP", "2022-01-25T00:00:00Z")
    assert load_settings().kcl_initial_timestamp is not None


def test_models_that_run_code_when_loaded_are_refused_unless_the_operator_allows_them(env):
    for name in ("ALLOW_PICKLE_MODELS", "MODEL_TRUSTED_TYPES"):
        env.delenv(name, raising=False)
    settings = load_settings()
    assert settings.allow_pickle_models is False
    assert settings.model_trusted_types == DEFAULT_TRUSTED_TYPES
    env.setenv("ALLOW_PICKLE_MODELS", "true")
    assert load_settings().allow_pickle_models is True


def test_the_skops_allow_list_is_a_comma_separated_list_of_type_names(env):
    env.setenv("MODEL_TRUSTED_TYPES", " sklearn.tree._tree.Tree, numpy.expm1 ,")
    assert load_settings().model_trusted_types == ("sklearn.tree._tree.Tree", "numpy.expm1")
    env.setenv("MODEL_TRUSTED_TYPES", "")
    assert load_settings().model_trusted_types == ()
