"""The public surface: ``agentwharf`` and ``agentwharf.agents`` export exactly these names."""

import importlib
import importlib.metadata

import pytest

import agentwharf

EXPECTED_TOP_LEVEL = ["AgentwharfError", "DeploymentFailed", "__version__", "agents"]
EXPECTED_AGENTS = ["Deployment", "Gate", "PermissionLevel", "Rollout", "abort_rollout", "delete_deployment", "deploy",
                   "get_deployments", "get_permissions", "get_review_instructions", "get_rollout", "list_deployments",
                   "promote_rollout", "set_permissions", "set_review_instructions"]


def test_top_level_all_is_pinned_and_sorted():
    assert agentwharf.__all__ == sorted(EXPECTED_TOP_LEVEL)


def test_agents_all_is_pinned():
    agents = importlib.import_module("agentwharf.agents")
    assert sorted(agents.__all__) == EXPECTED_AGENTS
    assert len(agents.__all__) == len(set(agents.__all__))


@pytest.mark.parametrize("name", EXPECTED_TOP_LEVEL)
def test_every_top_level_name_is_importable(name):
    namespace: dict = {}
    exec(f"from agentwharf import {name}", namespace)
    assert namespace[name] is not None


@pytest.mark.parametrize("name", EXPECTED_AGENTS)
def test_every_agents_name_is_importable(name):
    namespace: dict = {}
    exec(f"from agentwharf.agents import {name}", namespace)
    assert namespace[name] is not None


def test_star_import_gives_exactly_all():
    namespace: dict = {}
    exec("from agentwharf.agents import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == EXPECTED_AGENTS


def test_lazy_agents_attribute_is_the_module_and_unknown_names_fail():
    assert agentwharf.agents is importlib.import_module("agentwharf.agents")
    with pytest.raises(AttributeError):
        agentwharf.not_a_member  # noqa: B018


def test_version_matches_the_installed_distribution():
    assert agentwharf.__version__ == importlib.metadata.version("agentwharf")


def test_public_errors_are_the_error_tree():
    from agentwharf import errors

    assert agentwharf.AgentwharfError is errors.AgentwharfError
    assert issubclass(agentwharf.DeploymentFailed, agentwharf.AgentwharfError)
