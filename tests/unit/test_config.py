"""agentwharf.control.config: validation of a Databricks-shaped endpoint config."""

import pytest

from agentwharf.control.config import parse_config
from agentwharf.errors import InvalidParameter, NotImplementedByPlatform, ResourceLimitExceeded

SIZES = {"Small": 1, "Medium": 2, "Large": 4}
MAX = 15


def entity(version="1", **extra):
    return {"entity_name": "main.default.echo", "entity_version": version, **extra}


def parse(raw, max_entities=MAX):
    return parse_config(raw, SIZES, max_entities)


def test_happy_path_keeps_every_field():
    spec = parse({
        "served_entities": [
            entity("1", name="old", workload_size="Medium", scale_to_zero_enabled=True, environment_vars={"K": "v"}),
            entity("2", name="new"),
        ],
        "traffic_config": {"routes": [
            {"served_model_name": "old", "traffic_percentage": 20},
            {"served_model_name": "new", "traffic_percentage": 80},
        ]},
    })
    old, new = spec.entities
    assert (old.name, old.entity_name, old.entity_version) == ("old", "main.default.echo", "1")
    assert (old.workload_size, old.scale_to_zero, old.environment_vars) == ("Medium", True, {"K": "v"})
    assert (new.workload_size, new.scale_to_zero, new.environment_vars) == ("Small", False, {})
    assert spec.routes == (("old", 20), ("new", 80))
    assert spec.routes_json() == [
        {"served_model_name": "old", "traffic_percentage": 20},
        {"served_model_name": "new", "traffic_percentage": 80},
    ]


def test_served_entity_name_defaults_to_model_and_version():
    spec = parse({"served_entities": [entity(3)]})
    assert spec.entities[0].name == "main-default-echo_3"
    assert spec.entities[0].entity_version == "3"


def test_single_entity_without_traffic_config_gets_all_traffic():
    spec = parse({"served_entities": [entity("1")]})
    assert spec.routes == (("main-default-echo_1", 100),)


def test_several_entities_need_traffic_config():
    with pytest.raises(InvalidParameter, match="traffic_config.routes"):
        parse({"served_entities": [entity("1"), entity("2")]})


@pytest.mark.parametrize("split", [(50, 40), (60, 60), (0, 0)])
def test_routes_must_sum_to_100(split):
    raw = {
        "served_entities": [entity("1"), entity("2")],
        "traffic_config": {"routes": [
            {"served_model_name": "main-default-echo_1", "traffic_percentage": split[0]},
            {"served_model_name": "main-default-echo_2", "traffic_percentage": split[1]},
        ]},
    }
    with pytest.raises(InvalidParameter, match=f"sum to 100, got {sum(split)}"):
        parse(raw)


def test_zero_percent_route_is_allowed():
    spec = parse({
        "served_entities": [entity("1"), entity("2")],
        "traffic_config": {"routes": [
            {"served_model_name": "main-default-echo_1", "traffic_percentage": 0},
            {"served_model_name": "main-default-echo_2", "traffic_percentage": 100},
        ]},
    })
    assert spec.routes == (("main-default-echo_1", 0), ("main-default-echo_2", 100))


@pytest.mark.parametrize("pct", [-1, 101, "50", 50.0, True, None])
def test_route_percentage_must_be_an_integer_from_0_to_100(pct):
    raw = {"served_entities": [entity("1")],
           "traffic_config": {"routes": [{"served_model_name": "main-default-echo_1", "traffic_percentage": pct}]}}
    with pytest.raises(InvalidParameter, match=r"routes\[0\]\.traffic_percentage"):
        parse(raw)


def test_route_to_unknown_entity_is_rejected_and_named():
    raw = {"served_entities": [entity("1")],
           "traffic_config": {"routes": [{"served_model_name": "ghost", "traffic_percentage": 100}]}}
    with pytest.raises(InvalidParameter, match=r"routes\[0\]\.served_model_name 'ghost'"):
        parse(raw)


def test_route_listed_twice_is_rejected():
    raw = {"served_entities": [entity("1")],
           "traffic_config": {"routes": [
               {"served_model_name": "main-default-echo_1", "traffic_percentage": 50},
               {"served_model_name": "main-default-echo_1", "traffic_percentage": 50},
           ]}}
    with pytest.raises(InvalidParameter, match="appears twice"):
        parse(raw)


def test_duplicate_entity_names_are_rejected():
    raw = {"served_entities": [entity("1", name="same"), entity("2", name="same")],
           "traffic_config": {"routes": [{"served_model_name": "same", "traffic_percentage": 100}]}}
    with pytest.raises(InvalidParameter, match="unique"):
        parse(raw)


def test_same_model_version_twice_is_rejected():
    raw = {"served_entities": [entity("1", name="a"), entity("1", name="b")],
           "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 100}]}}
    with pytest.raises(InvalidParameter, match="same model version"):
        parse(raw)


def test_more_entities_than_the_limit_is_a_resource_limit():
    raw = {"served_entities": [entity(str(v)) for v in range(1, 4)]}
    with pytest.raises(ResourceLimitExceeded, match="at most 2") as info:
        parse(raw, max_entities=2)
    assert info.value.error_code == "RESOURCE_LIMIT_EXCEEDED"


def test_bad_workload_size_lists_the_allowed_sizes():
    with pytest.raises(InvalidParameter, match=r"served_entities\[0\]\.workload_size .*'Large', 'Medium', 'Small'.*'Huge'"):
        parse({"served_entities": [entity(workload_size="Huge")]})


def test_unhashable_workload_size_is_an_invalid_parameter():
    # A JSON list here must be a 400, not a TypeError (a 500 from the API).
    with pytest.raises(InvalidParameter, match="workload_size"):
        parse({"served_entities": [entity(workload_size=["Small"])]})


@pytest.mark.parametrize("value", ["true", 1, None])
def test_scale_to_zero_must_be_a_boolean(value):
    with pytest.raises(InvalidParameter, match=r"served_entities\[0\]\.scale_to_zero_enabled"):
        parse({"served_entities": [entity(scale_to_zero_enabled=value)]})


def test_missing_entity_name_is_named():
    with pytest.raises(InvalidParameter, match=r"served_entities\[1\]\.entity_name is required"):
        parse({"served_entities": [entity("1"), {"entity_version": "2"}]})


def test_missing_entity_version_is_named():
    with pytest.raises(InvalidParameter, match=r"served_entities\[0\]\.entity_version is required"):
        parse({"served_entities": [{"entity_name": "main.default.echo"}]})


def test_bad_entity_version_is_named():
    with pytest.raises(InvalidParameter, match=r"served_entities\[0\]\.entity_version: model_version"):
        parse({"served_entities": [entity("abc")]})


def test_bad_environment_vars_are_named_with_the_entity():
    with pytest.raises(InvalidParameter, match=r"served_entities\[0\]\.environment_vars key 'lower'"):
        parse({"served_entities": [entity(environment_vars={"lower": "x"})]})


def test_unknown_fields_such_as_echoed_state_are_ignored():
    spec = parse({
        "served_entities": [entity("1", state={"deployment": "DEPLOYMENT_READY"}, creator="me")],
        "traffic_config": {"routes": [{"served_model_name": "main-default-echo_1", "traffic_percentage": 100}]},
        "config_version": 4,
    })
    assert spec.entities[0].entity_version == "1"
    assert spec.routes == (("main-default-echo_1", 100),)


def test_apps_entity_is_rejected_as_not_implemented():
    with pytest.raises(NotImplementedByPlatform, match="only registered MLflow models") as info:
        parse({"served_entities": [{"entity_name": "apps/my-app", "entity_version": "1"}]})
    assert info.value.error_code == "NOT_IMPLEMENTED"
    assert info.value.http_status == 501


@pytest.mark.parametrize("entity", [
    {"name": "llama", "foundation_model": {"name": "llama"}},
    {"entity_name": "system.ai.llama", "foundation_model": {"name": "llama"}},
])
def test_foundation_models_are_refused_as_not_implemented_by_what_they_are(entity):
    with pytest.raises(NotImplementedByPlatform, match="foundation_model entities") as info:
        parse({"served_entities": [entity]})
    assert info.value.http_status == 501


@pytest.mark.parametrize("raw", [None, [], {"served_entities": []}, {"served_entities": "x"}, {}])
def test_config_needs_a_non_empty_served_entities_list(raw):
    with pytest.raises(InvalidParameter):
        parse(raw)


def test_legacy_served_models_and_model_name_fields_are_understood():
    spec = parse({"served_models": [{"model_name": "main.default.echo", "model_version": "5"}]})
    assert spec.entities[0].entity_name == "main.default.echo"
    assert spec.entities[0].entity_version == "5"
