"""agentwharf.auth.levels and model_policy: the endpoint levels' order, registered-model
permissions, and what a logged model's MLmodel declares (and nothing more)."""

import pytest
import yaml

from agentwharf.auth.levels import (
    MODEL_PERMISSIONS,
    PermissionLevel,
    model_permission_at_least,
    parse_model_permission,
)
from agentwharf.auth.model_policy import ModelPolicy, policy_from_mlmodel
from agentwharf.errors import InvalidParameter

L = PermissionLevel
ORDER = [L.NO_PERMISSIONS, L.CAN_VIEW, L.CAN_QUERY, L.CAN_REVIEW, L.CAN_MANAGE]


# ---- endpoint permission levels ---------------------------------------------------------------


def test_levels_are_ranked_weakest_first():
    assert [level.rank for level in ORDER] == [0, 1, 2, 3, 4]
    assert sorted(PermissionLevel, key=lambda lv: lv.rank) == ORDER


@pytest.mark.parametrize("have", ORDER)
@pytest.mark.parametrize("needed", ORDER)
def test_each_level_includes_exactly_the_ones_before_it(have, needed):
    assert have.allows(needed) == (ORDER.index(have) >= ORDER.index(needed))


def test_the_guides_table():
    assert L.CAN_QUERY.allows(L.CAN_VIEW)
    assert not L.CAN_VIEW.allows(L.CAN_QUERY)
    assert not L.CAN_QUERY.allows(L.CAN_REVIEW)  # querying does not read others' traces
    assert L.CAN_REVIEW.allows(L.CAN_QUERY)
    assert not L.CAN_REVIEW.allows(L.CAN_MANAGE)
    assert all(L.CAN_MANAGE.allows(level) for level in PermissionLevel)
    assert not any(L.NO_PERMISSIONS.allows(level) for level in ORDER[1:])


def test_rank_not_string_order_decides():
    # PermissionLevel is a str enum: alphabetically CAN_MANAGE < CAN_VIEW. Rank must be used.
    assert L.CAN_MANAGE.rank > L.CAN_VIEW.rank
    assert min(L.CAN_MANAGE, L.CAN_QUERY, key=lambda lv: lv.rank) is L.CAN_QUERY


@pytest.mark.parametrize(("text", "level"), [
    ("CAN_QUERY", L.CAN_QUERY), ("can_query", L.CAN_QUERY), ("Can_Manage", L.CAN_MANAGE),
    ("no_permissions", L.NO_PERMISSIONS), ("CAN_VIEW", L.CAN_VIEW), ("can_review", L.CAN_REVIEW),
])
def test_parse_accepts_any_case(text, level):
    assert PermissionLevel.parse(text) is level


def test_parse_passes_levels_through():
    assert PermissionLevel.parse(L.CAN_REVIEW) is L.CAN_REVIEW


@pytest.mark.parametrize("text", ["CAN_EDIT", "", "MANAGE", "USE", " CAN_QUERY", "CAN QUERY", None, 3, "CAN_QUERY;DROP"])
def test_parse_rejects_unknown_levels_with_a_clear_400(text):
    with pytest.raises(InvalidParameter) as caught:
        PermissionLevel.parse(text)
    message = caught.value.message
    assert f"Unknown permission level {text!r}" in message
    for level in PermissionLevel:
        assert level.value in message
    assert caught.value.http_status == 400


def test_levels_are_their_wire_names():
    assert L.CAN_QUERY == "CAN_QUERY"
    assert L("CAN_MANAGE") is L.CAN_MANAGE


# ---- registered-model permissions -------------------------------------------------------------


def test_model_permissions_weakest_first():
    assert MODEL_PERMISSIONS == ("READ", "USE", "EDIT", "MANAGE")


@pytest.mark.parametrize("text", ["read", "USE", "Edit", "manage"])
def test_parse_model_permission_normalises_case(text):
    assert parse_model_permission(text) == text.upper()


@pytest.mark.parametrize("text", ["CAN_QUERY", "NO_PERMISSIONS", "WRITE", "", "ADMIN", "use "])
def test_parse_model_permission_rejects_others(text):
    with pytest.raises(InvalidParameter, match="Unknown registered-model permission") as caught:
        parse_model_permission(text)
    assert "READ, USE, EDIT, MANAGE" in caught.value.message


@pytest.mark.parametrize(("have", "needed", "expected"), [
    ("READ", "USE", False),
    ("USE", "USE", True),
    ("EDIT", "USE", True),
    ("MANAGE", "USE", True),
    ("READ", "READ", True),
    ("USE", "EDIT", False),
    ("EDIT", "MANAGE", False),
    ("MANAGE", "MANAGE", True),
    (None, "READ", False),
    (None, "USE", False),
    ("NO_PERMISSIONS", "READ", False),
    ("use", "USE", False),  # MLflow stores upper case; anything else is not a permission
    ("", "READ", False),
])
def test_model_permission_at_least(have, needed, expected):
    assert model_permission_at_least(have, needed) is expected


# ---- what a logged model declares -------------------------------------------------------------


def serving(*names, **more):
    return {"api_version": "1", "databricks": {"serving_endpoint": [{"name": n} for n in names], **more}}


def test_nothing_declared_means_nothing_granted():
    assert policy_from_mlmodel({}) == ModelPolicy()
    assert policy_from_mlmodel({"flavors": {"python_function": {}}}) == ModelPolicy(endpoints=(), api_scopes=None)


def test_top_level_resources_only():
    policy = policy_from_mlmodel({"resources": serving("llm", "reranker")})
    assert policy == ModelPolicy(endpoints=("llm", "reranker"), api_scopes=None)


def test_only_serving_endpoints_count():
    resources = serving("llm", vector_search_index=[{"name": "main.default.idx"}],
                        sql_warehouse=[{"name": "wh"}], genie_space=[{"name": "g"}])
    assert policy_from_mlmodel({"resources": resources}).endpoints == ("llm",)


def test_duplicates_collapse_in_declared_order():
    assert policy_from_mlmodel({"resources": serving("b", "a", "b", "a", "c")}).endpoints == ("b", "a", "c")


def test_auth_policy_with_system_and_user_parts():
    mlmodel = {"auth_policy": {"system_auth_policy": {"resources": serving("llm")},
                               "user_auth_policy": {"api_scopes": ["serving.serving-endpoints", "dashboards.genie"]}}}
    assert policy_from_mlmodel(mlmodel) == ModelPolicy(endpoints=("llm",),
                                                       api_scopes=("serving.serving-endpoints", "dashboards.genie"))


def test_auth_policy_with_only_a_user_part():
    mlmodel = {"auth_policy": {"system_auth_policy": {}, "user_auth_policy": {"api_scopes": ["serving.serving-endpoints"]}}}
    assert policy_from_mlmodel(mlmodel) == ModelPolicy(endpoints=(), api_scopes=("serving.serving-endpoints",))


def test_auth_policy_with_only_a_system_part_gives_no_user_token():
    mlmodel = {"auth_policy": {"system_auth_policy": {"resources": serving("llm")}, "user_auth_policy": {}}}
    assert policy_from_mlmodel(mlmodel) == ModelPolicy(endpoints=("llm",), api_scopes=None)


def test_with_an_auth_policy_top_level_resources_are_ignored():
    # The auth policy is the whole truth: a stray top-level list must not widen the credential.
    mlmodel = {"resources": serving("secret"),
               "auth_policy": {"user_auth_policy": {"api_scopes": ["serving.serving-endpoints"]}}}
    assert policy_from_mlmodel(mlmodel).endpoints == ()
    mlmodel["auth_policy"]["system_auth_policy"] = {"resources": serving("llm")}
    assert policy_from_mlmodel(mlmodel).endpoints == ("llm",)


def test_empty_auth_policy_falls_back_to_resources():
    assert policy_from_mlmodel({"auth_policy": {}, "resources": serving("llm")}).endpoints == ("llm",)
    assert policy_from_mlmodel({"auth_policy": None, "resources": serving("llm")}).endpoints == ("llm",)


def test_empty_api_scopes_is_a_user_token_with_no_scopes():
    policy = policy_from_mlmodel({"auth_policy": {"user_auth_policy": {"api_scopes": []}}})
    assert policy.api_scopes == ()


def test_scopes_are_strings():
    policy = policy_from_mlmodel({"auth_policy": {"user_auth_policy": {"api_scopes": ["a", 1]}}})
    assert policy.api_scopes == ("a", "1")


@pytest.mark.parametrize("mlmodel", [
    None,
    [],
    ["resources"],
    "resources: x",
    {"resources": None},
    {"resources": []},
    {"resources": "llm"},
    {"resources": {"databricks": None}},
    {"resources": {"databricks": ["serving_endpoint"]}},
    {"resources": {"databricks": "serving_endpoint"}},
    {"resources": {"databricks": {"serving_endpoint": None}}},
    {"resources": {"databricks": {"serving_endpoint": 5}}},
    {"resources": {"databricks": {"serving_endpoint": "llm"}}},
    {"resources": {"databricks": {"serving_endpoint": {"name": "llm"}}}},
    {"resources": {"databricks": {"serving_endpoint": [None, "llm", 7, {"name": 7}, {"endpoint_name": "llm"}, ["llm"]]}}},
    {"auth_policy": ["system_auth_policy"]},
    {"auth_policy": "yes"},
    {"auth_policy": 1},
    {"auth_policy": {"system_auth_policy": ["resources"]}},
    {"auth_policy": {"system_auth_policy": "llm"}},
    {"auth_policy": {"system_auth_policy": {"resources": ["llm"]}}},
    {"auth_policy": {"system_auth_policy": {"resources": {"databricks": ["x"]}}}},
    {"auth_policy": {"user_auth_policy": "serving.serving-endpoints"}},
    {"auth_policy": {"user_auth_policy": {"api_scopes": "serving.serving-endpoints"}}},
    {"auth_policy": {"user_auth_policy": {"api_scopes": None}}},
    {"auth_policy": {"user_auth_policy": ["api_scopes"]}},
])
def test_malformed_input_declares_nothing_and_never_crashes(mlmodel):
    # A model's author controls its MLmodel; a bad one must not turn into a 500 (or a grant).
    assert policy_from_mlmodel(mlmodel) == ModelPolicy()


def test_malformed_entries_are_skipped_valid_ones_kept():
    mlmodel = {"resources": {"databricks": {"serving_endpoint": [None, {"name": 3}, {"name": "llm"}, "x"]}}}
    assert policy_from_mlmodel(mlmodel).endpoints == ("llm",)


def test_shapes_mlflow_itself_writes():
    """The MLmodel as MLflow's own classes write it, through YAML as the registry reads it."""
    from mlflow.models import Model
    from mlflow.models.auth_policy import AuthPolicy, SystemAuthPolicy, UserAuthPolicy
    from mlflow.models.resources import (
        DatabricksServingEndpoint,
        DatabricksVectorSearchIndex,
    )

    resources = [DatabricksServingEndpoint(endpoint_name="llm"), DatabricksVectorSearchIndex(index_name="a.b.idx"),
                 DatabricksServingEndpoint(endpoint_name="reranker")]

    def via_yaml(model: Model) -> dict:
        return yaml.safe_load(model.to_yaml())

    assert policy_from_mlmodel(via_yaml(Model(resources=resources))) == ModelPolicy(endpoints=("llm", "reranker"))

    both = AuthPolicy(system_auth_policy=SystemAuthPolicy(resources=resources),
                      user_auth_policy=UserAuthPolicy(api_scopes=["serving.serving-endpoints", "sql.statement-execution"]))
    assert policy_from_mlmodel(via_yaml(Model(auth_policy=both))) == ModelPolicy(
        endpoints=("llm", "reranker"), api_scopes=("serving.serving-endpoints", "sql.statement-execution"))

    user_only = AuthPolicy(user_auth_policy=UserAuthPolicy(api_scopes=["serving.serving-endpoints"]))
    assert policy_from_mlmodel(via_yaml(Model(auth_policy=user_only))) == ModelPolicy(
        endpoints=(), api_scopes=("serving.serving-endpoints",))

    system_only = AuthPolicy(system_auth_policy=SystemAuthPolicy(resources=resources[:1]))
    assert policy_from_mlmodel(via_yaml(Model(auth_policy=system_only))) == ModelPolicy(endpoints=("llm",))

    assert policy_from_mlmodel(via_yaml(Model())) == ModelPolicy()
