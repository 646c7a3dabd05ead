"""`agentwharf.agents` against a real platform: the guide's deploy semantics."""

from __future__ import annotations

import mlflow
import pytest

from agentwharf import agents
from agentwharf.errors import AgentwharfError, AlreadyExists, DeploymentFailed, InvalidParameter, NotFound
from tests.integration.conftest import ask


def endpoint(http, name):
    return http.get(f"/api/2.0/serving-endpoints/{name}").json()


def traffic(http, name) -> dict[str, int]:
    routes = endpoint(http, name)["config"]["traffic_config"]["routes"]
    return {r["served_model_name"]: r["traffic_percentage"] for r in routes}


def test_deploy_returns_the_guides_names_and_answers(http, register):
    model = register("info")
    deployment = agents.deploy(model, 1)

    dashed = model.replace(".", "-")
    assert deployment.model_name == model
    assert deployment.model_version == "1"
    assert deployment.endpoint_name == f"agents_{dashed}"
    assert deployment.served_entity_name == f"{dashed}_1"
    assert deployment.query_endpoint == f"{http.base_url}/serving-endpoints/agents_{dashed}/served-models/{dashed}_1/invocations"
    assert deployment.endpoint_url == f"{http.base_url}/serving-endpoints/agents_{dashed}/invocations"
    # deploy returned only once the version answers.
    answer = http.post(deployment.query_endpoint, json={"input": [{"role": "user", "content": "ping"}]})
    assert answer.status_code == 200
    assert answer.json()["output"][0]["content"][0]["text"] == "Echo: ping"
    view = endpoint(http, deployment.endpoint_name)
    assert view["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
    entity = view["config"]["served_entities"][0]
    assert entity["entity_version"] == "1" and isinstance(entity["entity_version"], str)
    agents.delete_deployment(model)


def test_worker_gets_the_endpoints_experiment_and_environment(http, register):
    model = register("info")
    deployment = agents.deploy(model, "1", environment_vars={"GREETING": "hola", "MODE_2": "x"}, tags={"team": "search"})
    info = ask(http, f"/serving-endpoints/{deployment.endpoint_name}/invocations", env=["GREETING", "MODE_2"]).json()["custom_outputs"]
    view = endpoint(http, deployment.endpoint_name)

    assert info["env"] == {"GREETING": "hola", "MODE_2": "x"}
    assert info["experiment_id"] == view["experiment_id"]
    assert mlflow.get_experiment(info["experiment_id"]).name.endswith(deployment.endpoint_name)
    assert {"key": "team", "value": "search"} in view["tags"]
    agents.delete_deployment(model)


def test_new_version_takes_all_traffic_and_old_stays_reachable(http, register):
    model = register("info", versions=3)
    first = agents.deploy(model, "1")
    second = agents.deploy(model, "2")
    ep = first.endpoint_name

    assert second.endpoint_name == ep
    assert traffic(http, ep) == {first.served_entity_name: 0, second.served_entity_name: 100}
    served_by = {ask(http, f"/serving-endpoints/{ep}/invocations").json()["custom_outputs"]["entity"] for _ in range(10)}
    assert served_by == {second.served_entity_name}
    old = http.post(first.query_endpoint, json={"input": [{"role": "user", "content": "old"}]})
    assert old.json()["custom_outputs"]["entity"] == first.served_entity_name

    listed = {(d.model_name, d.model_version) for d in agents.list_deployments()}
    assert {(model, "1"), (model, "2")} <= listed
    assert [d.model_version for d in agents.get_deployments(model, "2")] == ["2"]
    assert sorted(d.model_version for d in agents.get_deployments(model)) == ["1", "2"]

    agents.deploy(model, "3")
    agents.delete_deployment(model, "3")  # the highest remaining version takes 100%
    assert traffic(http, ep) == {first.served_entity_name: 0, second.served_entity_name: 100}
    agents.delete_deployment(model, "2")
    assert traffic(http, ep) == {first.served_entity_name: 100}
    agents.delete_deployment(model, "1")  # the last one: the endpoint goes too
    gone = http.get(f"/api/2.0/serving-endpoints/{ep}")
    assert gone.status_code == 404 and gone.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert agents.get_deployments(model) == []


def test_custom_endpoint_name(http, register):
    model = register("info")
    deployment = agents.deploy(model, 1, endpoint_name="my-agent")
    assert deployment.endpoint_name == "my-agent"
    assert ask(http, "/serving-endpoints/my-agent/invocations").status_code == 200
    agents.delete_deployment(model)


@pytest.mark.parametrize(
    ("kwargs", "code", "fragment"),
    [
        ({"model_version": "9"}, "RESOURCE_DOES_NOT_EXIST", "Version 9"),
        ({"model_name": "main.tests.nosuchmodel"}, "RESOURCE_DOES_NOT_EXIST", "nosuchmodel"),
        ({"model_name": "plainname"}, "INVALID_PARAMETER_VALUE", "catalog.schema.model"),
        ({"environment_vars": {"lower": "x"}}, "INVALID_PARAMETER_VALUE", "'lower'"),
        ({"environment_vars": {"PORT": 8080}}, "INVALID_PARAMETER_VALUE", "PORT"),
        ({"workload_size": "Huge"}, "INVALID_PARAMETER_VALUE", "workload_size"),
        ({"model_version": "abc"}, "INVALID_PARAMETER_VALUE", "model_version"),
    ],
)
def test_bad_deploys_fail_clearly_and_change_nothing(http, register, kwargs, code, fragment):
    model = register("info")
    before = http.get("/api/2.0/serving-endpoints").json()["endpoints"]
    args = {"model_name": model, "model_version": "1", **kwargs}
    with pytest.raises(AgentwharfError) as raised:
        agents.deploy(args.pop("model_name"), args.pop("model_version"), **args)
    assert raised.value.error_code == code
    # The client raises the class of agentwharf.errors the server named, so callers can catch it.
    assert isinstance(raised.value, NotFound if code == "RESOURCE_DOES_NOT_EXIST" else InvalidParameter)
    assert fragment in raised.value.message
    assert http.get("/api/2.0/serving-endpoints").json()["endpoints"] == before


def test_deploying_a_served_version_again_is_refused(http, register):
    model = register("info")
    deployment = agents.deploy(model, "1")
    before = endpoint(http, deployment.endpoint_name)
    with pytest.raises(AlreadyExists) as raised:
        agents.deploy(model, "1")
    assert raised.value.error_code == "RESOURCE_ALREADY_EXISTS"
    assert endpoint(http, deployment.endpoint_name)["config"] == before["config"]
    agents.delete_deployment(model)


def test_a_model_that_fails_to_load_raises_with_the_workers_error(http, register):
    model = register("broken")
    with pytest.raises(DeploymentFailed) as raised:
        agents.deploy(model, "1")
    assert "broken on purpose: CONNECTION_STRING is not set" in raised.value.message
    view = endpoint(http, f"agents_{model.replace('.', '-')}")
    assert view["state"]["config_update"] == "UPDATE_FAILED"
    assert "config" not in view  # nothing is served, nothing routed
    assert agents.get_deployments(model) == []


def test_a_failed_new_version_leaves_the_serving_one_untouched(http, register, logged):
    model = register("info")
    mlflow.register_model(logged["broken"], model)  # version 2 cannot load
    good = agents.deploy(model, "1")
    with pytest.raises(DeploymentFailed):
        agents.deploy(model, "2")
    assert traffic(http, good.endpoint_name) == {good.served_entity_name: 100}
    assert ask(http, f"/serving-endpoints/{good.endpoint_name}/invocations").status_code == 200
    agents.delete_deployment(model)


def test_more_than_fifteen_served_versions_is_refused(http, register):
    model = register("info")
    deployment = agents.deploy(model, "1")
    entities = [{"entity_name": model, "entity_version": str(v), "name": f"v{v}"} for v in range(1, 17)]
    routes = [{"served_model_name": "v1", "traffic_percentage": 100}] + [
        {"served_model_name": f"v{v}", "traffic_percentage": 0} for v in range(2, 17)]
    answer = http.put(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}/config",
                      json={"served_entities": entities, "traffic_config": {"routes": routes}})
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "RESOURCE_LIMIT_EXCEEDED"
    assert "15" in answer.json()["message"]
    assert len(endpoint(http, deployment.endpoint_name)["config"]["served_entities"]) == 1
    agents.delete_deployment(model)
