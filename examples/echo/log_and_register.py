"""Log the EchoAgent from code and register it as a catalog.schema.model name.

    python examples/echo/log_and_register.py [--name main.default.echo]

Uses MLFLOW_TRACKING_URI (the platform's base URL) and prints the new version.
"""

import argparse
from pathlib import Path

import mlflow
from mlflow.types.responses import ResponsesAgentRequest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="main.default.echo")
    args = parser.parse_args()
    mlflow.set_experiment("/agentwharf/quickstart")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="agent",
            python_model=str(Path(__file__).with_name("agent.py")),
            input_example=ResponsesAgentRequest(input=[{"role": "user", "content": "hello"}]).model_dump(exclude_none=True),
            pip_requirements=["mlflow"],
        )
    version = mlflow.register_model(info.model_uri, args.name)
    print(version.version)


if __name__ == "__main__":
    main()
