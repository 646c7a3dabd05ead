"""Log the ChatAgent example, register it, deploy it, and query it as a Databricks project would.

    MLFLOW_TRACKING_URI=http://127.0.0.1:8710 MLFLOW_TRACKING_TOKEN=$(cat .agentwharf/admin.token) \\
    AGENTWHARF_TOKEN=$(cat .agentwharf/admin.token) \\
        .venv/bin/python examples/chat_agent/log_and_deploy.py [--name main.default.chat_agent]
"""

import argparse
import os
from pathlib import Path

import httpx
import mlflow


def log_and_register(name: str) -> str:
    """Log agent.py (MLflow infers a ChatAgent's signature) and register it; returns the version."""
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="agent", python_model=str(Path(__file__).with_name("agent.py")),
                                       pip_requirements=["mlflow"])
    return mlflow.register_model(info.model_uri, name).version


def main() -> None:
    from agentwharf import agents

    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="main.default.chat_agent")
    args = parser.parse_args()
    mlflow.set_experiment("/examples/chat-agent")
    deployment = agents.deploy(args.name, log_and_register(args.name))
    host = os.environ.get("AGENTWHARF_HOST", "http://127.0.0.1:8710")
    headers = {"Authorization": f"Bearer {os.environ['AGENTWHARF_TOKEN']}"}
    # The ChatAgent request shape, on the endpoint's own route:
    answer = httpx.post(f"{host}/serving-endpoints/{deployment.endpoint_name}/invocations", headers=headers, timeout=60,
                        json={"messages": [{"role": "user", "content": "hello"}], "context": {"conversation_id": "c1"}})
    print(answer.json()["messages"][-1]["content"])
    # And through the OpenAI client, as Chat Completions:
    import openai

    client = openai.OpenAI(base_url=f"{host}/serving-endpoints", api_key=os.environ["AGENTWHARF_TOKEN"])
    print(client.chat.completions.create(model=deployment.endpoint_name, messages=[{"role": "user", "content": "hi"}])
          .choices[0].message.content)


if __name__ == "__main__":
    main()
