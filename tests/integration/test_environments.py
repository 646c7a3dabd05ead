"""Each model version runs in an environment built from its own logged requirements (uv),
shared by versions with the same ones; a deploy whose requirements cannot be met fails with the
installer's words and changes nothing that serves."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import mlflow
import pytest

from agentwharf import agents
from agentwharf.errors import DeploymentFailed
from tests.integration.conftest import AGENTS, ask

BODY = {"input": [{"role": "user", "content": "hi"}]}


def log(requirements: list[str], agent: str = "emoji") -> str:
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("/tests/environments")
    with mlflow.start_run():
        return mlflow.pyfunc.log_model(name="agent", python_model=str(AGENTS / f"{agent}_agent.py"),
                                       pip_requirements=requirements).model_uri


def register(uri: str, versions: int = 1) -> str:
    name = f"main.envs.m{uuid.uuid4().hex[:8]}"
    for _ in range(versions):
        mlflow.register_model(uri, name)
    return name


@pytest.fixture(scope="module")
def emoji_model(platform) -> str:
    return log(["mlflow", "emoji==2.14.0"])


def test_a_model_that_needs_a_package_the_platform_lacks_deploys_and_answers(platform, http, emoji_model):
    with pytest.raises(ImportError):
        __import__("emoji")  # the platform (and this test) do not have it
    model = register(emoji_model, versions=2)
    first = agents.deploy(model, "1")
    answer = ask(http, f"/serving-endpoints/{first.endpoint_name}/invocations")
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"][0]["content"][0]["text"] == "served \N{THUMBS UP SIGN}"
    outputs = answer.json()["custom_outputs"]
    assert outputs["emoji"] == "2.14.0"
    python = Path(outputs["python"])
    assert python.is_relative_to(Path(os.environ["AGENTWHARF_ENVIRONMENTS_DIR"])) and python != Path(sys.executable)
    # The environment keeps its bytecode, though the platform runs with PYTHONDONTWRITEBYTECODE
    # (PLATFORM_ENV): a worker's next start does not compile MLflow, nor the model's packages, again.
    site = next(python.parent.parent.glob("lib/python*/site-packages"))
    for package in ("mlflow", "pandas", "emoji"):
        assert list((site / package / "__pycache__").glob("*.pyc")), f"{package} has no bytecode in {site}"

    # The same requirements: the same environment, reused, not built again.
    second = agents.deploy(model, "2")
    again = ask(http, f"/serving-endpoints/{second.endpoint_name}/invocations").json()["custom_outputs"]
    assert again["python"] == str(python)
    build_log = platform.home / "logs" / "workers" / second.endpoint_name / f"{second.served_entity_name}-build.log"
    assert f"reusing environment {python.parent.parent.name}" in build_log.read_text()
    markers = [p / ".agentwharf-ready" for p in python.parent.parent.parent.iterdir() if p.is_dir()]
    assert sum("emoji==2.14.0" in m.read_text() for m in markers if m.exists()) == 1
    agents.delete_deployment(model)


def test_an_unsatisfiable_requirement_fails_with_the_installers_words_and_keeps_what_serves(http, emoji_model, logged):
    model = register(emoji_model)
    mlflow.register_model(log(["mlflow", "emoji==0.0.999"]), model)  # version 2 cannot be installed
    good = agents.deploy(model, "1")
    with pytest.raises(DeploymentFailed) as raised:
        agents.deploy(model, "2")
    message = raised.value.message
    assert "emoji==0.0.999" in message and "The installer said" in message
    endpoint = http.get(f"/api/2.0/serving-endpoints/{good.endpoint_name}").json()
    assert endpoint["state"]["config_update"] == "UPDATE_FAILED"
    assert [r["traffic_percentage"] for r in endpoint["config"]["traffic_config"]["routes"]] == [100]
    assert ask(http, f"/serving-endpoints/{good.endpoint_name}/invocations").status_code == 200
    agents.delete_deployment(model)


def test_a_model_pinning_another_mlflow_is_refused_naming_the_conflict(http):
    model = register(log(["mlflow==3.10.0"], agent="info"))
    with pytest.raises(DeploymentFailed) as raised:
        agents.deploy(model, "1")
    message = raised.value.message
    assert "mlflow==3.10.0" in message and "agentwharf's workers need mlflow>=3.17,<3.18" in message


def test_env_manager_local_runs_in_the_platforms_own_environment(http, logged):
    model = register(logged["info"])
    deployment = agents.deploy(model, "1", env_manager="local")
    outputs = ask(http, f"/serving-endpoints/{deployment.endpoint_name}/invocations").json()["custom_outputs"]
    assert outputs["python"] == sys.executable
    served = http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}").json()["config"]["served_entities"]
    assert served[0]["env_manager"] == "local"
    agents.delete_deployment(model)


def test_unknown_deploy_arguments_are_refused_and_databricks_ones_accepted(http, logged):
    with pytest.raises(TypeError, match="enviroment_vars"):
        agents.deploy("main.envs.x", "1", enviroment_vars={"A": "1"})
    bad = http.post("/api/2.0/agents/deployments:deploy", json={"model_name": "main.envs.x", "model_version": "1",
                                                                "env_manager": "conda"})
    assert bad.status_code == 400 and "env_manager" in bad.json()["message"]
    model = register(logged["info"])
    deployment = agents.deploy(model, "1", budget_policy_id="bp-1", deploy_feedback_model=True)
    assert ask(http, f"/serving-endpoints/{deployment.endpoint_name}/invocations").status_code == 200
    agents.delete_deployment(model)
