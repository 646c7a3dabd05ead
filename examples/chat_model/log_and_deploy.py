"""Log the ChatModel example, register it, deploy it, and query it as a chat completion.

    MLFLOW_TRACKING_URI=http://127.0.0.1:8710 MLFLOW_TRACKING_TOKEN=$(cat .agentwharf/admin.token) \\
    AGENTWHARF_TOKEN=$(cat .agentwharf/admin.token) \\
        .venv/bin/python examples/chat_model/log_and_deploy.py [--name main.default.chat_model]
"""

import argparse
import os
from pathlib import Path

import mlflow


def log_and_register(name: str) -> str:
    """Log model.py (MLflow gives a ChatModel its chat signature) and register it; returns the version."""
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("model.py")),
                                       pip_requirements=["mlflow"])
    return mlflow.register_model(info.model_uri, name).version


def main() -> None:
    import openai

    from agentwharf import agents

    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="main.default.chat_model")
    args = parser.parse_args()
    mlflow.set_experiment("/examples/chat-model")
    deployment = agents.deploy(args.name, log_and_register(args.name))
    host = os.environ.get("AGENTWHARF_HOST", "http://127.0.0.1:8710")
    client = openai.OpenAI(base_url=f"{host}/serving-endpoints", api_key=os.environ["AGENTWHARF_TOKEN"])
    stream = client.chat.completions.create(model=deployment.endpoint_name, messages=[{"role": "user", "content": "hello there"}],
                                            max_tokens=2, stream=True)
    print("".join(chunk.choices[0].delta.content or "" for chunk in stream))


if __name__ == "__main__":
    main()
