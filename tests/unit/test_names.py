"""agentwharf.names: how registered models become endpoint and served entity names."""

import pytest

from agentwharf import names
from agentwharf.errors import InvalidParameter


def test_default_endpoint_name_replaces_dots_and_adds_prefix():
    assert names.default_endpoint_name("main.default.echo") == "agents_main-default-echo"


def test_default_endpoint_name_is_cut_to_63_characters_and_stays_valid():
    long_name = "catalog." + "s" * 40 + "." + "m" * 40
    name = names.default_endpoint_name(long_name)
    assert len(name) == 63
    assert name == ("agents_catalog-" + "s" * 40 + "-" + "m" * 40)[:63]
    assert names.check_endpoint_name(name) == name


def test_served_entity_name_joins_dashed_model_and_version():
    assert names.served_entity_name("main.default.echo", "3") == "main-default-echo_3"


@pytest.mark.parametrize("name", ["a", "agents_main-default-echo", "9lives", "A" * 63, "x_y-z"])
def test_check_endpoint_name_accepts_valid_names(name):
    assert names.check_endpoint_name(name) == name


@pytest.mark.parametrize("name", ["", "-leading", "_leading", "has space", "dot.ted", "a/b", "A" * 64, None, 5])
def test_check_endpoint_name_rejects_invalid_names(name):
    with pytest.raises(InvalidParameter, match="Invalid endpoint name"):
        names.check_endpoint_name(name)


def test_check_endpoint_name_rejects_trailing_newline():
    # `$` in the pattern also matches before a final "\n"; such a name must not reach URLs or paths.
    with pytest.raises(InvalidParameter):
        names.check_endpoint_name("agents_echo\n")


@pytest.mark.parametrize("version, expected", [("3", "3"), (3, "3"), (" 7 ", "7"), ("012", "12")])
def test_check_model_version_accepts_positive_integers_as_strings(version, expected):
    result = names.check_model_version(version)
    assert result == expected
    assert isinstance(result, str)


@pytest.mark.parametrize("version", [0, -1, "0", "-1", "abc", "", "1.5", True, False, 1.5, None, [1]])
def test_check_model_version_rejects_everything_else(version):
    with pytest.raises(InvalidParameter, match="model_version"):
        names.check_model_version(version)


def test_check_model_version_rejects_superscript_digit_with_invalid_parameter():
    # "\u00b2".isdigit() is True but int("\u00b2") raises ValueError, which the API turns into a 500.
    with pytest.raises(InvalidParameter):
        names.check_model_version("\u00b2")


def test_check_environment_vars_none_is_empty_dict():
    assert names.check_environment_vars(None) == {}


def test_check_environment_vars_accepts_uppercase_keys_and_string_values():
    env = {"OPENAI_API_KEY": "sk-1", "_PRIVATE": "", "V2": "x"}
    assert names.check_environment_vars(env) == env


@pytest.mark.parametrize("key", ["lower", "Mixed", "1LEADING_DIGIT", "WITH-DASH", "WITH SPACE", ""])
def test_check_environment_vars_rejects_bad_keys_and_names_them(key):
    with pytest.raises(InvalidParameter) as info:
        names.check_environment_vars({"GOOD": "1", key: "v"})
    assert repr(key) in info.value.message
    assert "UPPERCASE" in info.value.message


def test_check_environment_vars_rejects_key_with_trailing_newline():
    with pytest.raises(InvalidParameter):
        names.check_environment_vars({"FOO\n": "x"})


@pytest.mark.parametrize("value", [1, 1.0, True, None, ["a"], {"a": "b"}])
def test_check_environment_vars_rejects_non_string_values_and_names_the_key(value):
    with pytest.raises(InvalidParameter) as info:
        names.check_environment_vars({"MY_VAR": value})
    assert "'MY_VAR'" in info.value.message
    assert "must be a string" in info.value.message


@pytest.mark.parametrize("env", [["A=1"], "A=1", 3])
def test_check_environment_vars_rejects_non_objects(env):
    with pytest.raises(InvalidParameter, match="environment_vars"):
        names.check_environment_vars(env)
