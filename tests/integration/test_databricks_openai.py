"""databricks-openai 0.18.0's `DatabricksOpenAI()` pointed at agentwharf with only DATABRICKS_HOST
and DATABRICKS_TOKEN set: Responses and Chat Completions, plain and streamed.

The package runs in a venv of its own (.venv-databricks-openai, no agentwharf in it) built from
databricks/openai-constraints.txt, which pins every package it pulls in: unpinned, pip's resolver
backtracks for many minutes (databricks-openai requires mlflow and, through unitycatalog-ai's
databricks extra, databricks-connect, whose numpy<2 and openai caps clash with the newest
releases). With the pins a fresh install takes about a minute and a quarter."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.client_venvs import client_venv
from tests.integration.conftest import deployed_info_agent

HERE = Path(__file__).parent / "databricks"
PACKAGES = ["databricks-openai==0.18.0"]
CONSTRAINTS = HERE / "openai-constraints.txt"


@pytest.fixture(scope="module")
def served(platform, logged):
    with deployed_info_agent(logged, "main.tests.dbxopenai") as deployment:
        yield deployment


@pytest.fixture(scope="module")
def dbx_openai_python() -> Path:
    return client_venv(".venv-databricks-openai", PACKAGES, CONSTRAINTS)


def _user_env(host: str, token: str, home: Path) -> dict[str, str]:
    """Only the two variables users set, plus PATH and a HOME with no ~/.databrickscfg in it."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "DATABRICKS_HOST": host, "DATABRICKS_TOKEN": token}


def test_databricks_openai_client_responses_and_chat_completions(platform, served, dbx_openai_python, tmp_path):
    env = _user_env(platform.base_url, os.environ.get("AGENTWHARF_TOKEN", "dapi-agentwharf-test"), tmp_path)
    result = subprocess.run([str(dbx_openai_python), str(HERE / "openai_calls.py"), served.endpoint_name],
                            check=False, capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["base_url"] == f"{platform.base_url}/serving-endpoints/"

    assert seen["responses"] == "Echo: dbx openai"
    assert seen["responses_object"] == "response"

    assert seen["streamed"] == ["response.created", *["response.output_text.delta"] * 3,
                                "response.output_item.done", "response.completed"]
    assert seen["stream_deltas"] == "part0 part1 part2 "
    assert seen["stream_done_text"] == ["Echo: dbx stream"]

    assert seen["chat"] == "Echo: dbx chat"
    assert seen["chat_role"] == "assistant"
    assert seen["chat_object"] == "chat.completion"
    assert seen["chat_stream"] == "part0 part1 part2 "
    assert seen["chat_chunk_objects"] == ["chat.completion.chunk"]


def test_databricks_openai_client_with_a_wrong_token_is_refused(platform, served, dbx_openai_python, tmp_path):
    env = _user_env(platform.base_url, "dapi-not-a-platform-token", tmp_path)
    script = ("import sys, openai\nfrom databricks_openai import DatabricksOpenAI\n"
              "try:\n    DatabricksOpenAI().responses.create(model=sys.argv[1], input='hi')\n"
              "except openai.AuthenticationError as e:\n    print(e.status_code)\n")
    result = subprocess.run([str(dbx_openai_python), "-c", script, served.endpoint_name],
                            check=False, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "401"
