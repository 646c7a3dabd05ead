"""Databricks' own clients pointed at agentwharf with two environment variables (issue 6's
query half): MLflow's `databricks` deployments client, and databricks-sdk 0.156.0 (installed
by this test in a venv of its own, as shared/reference/databricks-clients.md pins it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.client_venvs import SDK_PACKAGES, client_venv
from tests.integration.conftest import deployed_info_agent


@pytest.fixture(scope="module")
def served(platform, logged):
    with deployed_info_agent(logged, "main.tests.databricks") as deployment:
        yield deployment


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return client_venv(".venv-databricks", SDK_PACKAGES)


def test_databricks_sdk_lists_gets_queries_and_its_openai_client_works(platform, served, sdk_python):
    env = {**os.environ, "DATABRICKS_HOST": platform.base_url, "DATABRICKS_TOKEN": platform.token}
    result = subprocess.run([str(sdk_python), str(Path(__file__).parent / "databricks" / "sdk_calls.py"), served.endpoint_name],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert served.endpoint_name in seen["listed"]
    assert (seen["ready"], seen["config_update"]) == ("READY", "NOT_UPDATING")
    assert seen["entities"] == [[served.served_entity_name, served.model_name, "1"]]
    assert seen["routes"] == [[served.served_entity_name, 100]]
    assert seen["responses"] == "Echo: sdk openai"
    assert seen["streamed"][0] == "response.created" and seen["streamed"][-1] == "response.completed"
    assert seen["chat"] == "Echo: sdk chat"
    assert seen["chat_stream"] == "part0 part1 part2 "


def test_mlflow_databricks_deployments_client(platform, served, monkeypatch):
    from mlflow.deployments import get_deploy_client

    monkeypatch.setenv("DATABRICKS_HOST", platform.base_url)
    monkeypatch.setenv("DATABRICKS_TOKEN", platform.token)
    client = get_deploy_client("databricks")
    answer = client.predict(endpoint=served.endpoint_name, inputs={"input": [{"role": "user", "content": "dep"}]})
    assert answer["output"][0]["content"][0]["text"] == "Echo: dep"
    chunks = list(client.predict_stream(endpoint=served.endpoint_name, inputs={"input": [{"role": "user", "content": "s"}]}))
    assert [c["type"] for c in chunks] == ["response.output_text.delta"] * 3 + ["response.output_item.done"]
    assert served.endpoint_name in [e["name"] for e in client.list_endpoints()]
    assert client.get_endpoint(served.endpoint_name)["state"]["ready"] == "READY"
