"""Log the plain pyfunc example with its signature, register it, deploy it, and score two rows.

    MLFLOW_TRACKING_URI=http://127.0.0.1:8710 MLFLOW_TRACKING_TOKEN=$(cat .agentwharf/admin.token) \\
    AGENTWHARF_TOKEN=$(cat .agentwharf/admin.token) \\
        .venv/bin/python examples/pyfunc/log_and_deploy.py [--name main.default.pricer]
"""

import argparse
import os
from pathlib import Path

import mlflow
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("long", "quantity"), ColSpec("double", "unit_price")]),
    outputs=Schema([ColSpec("double", "total")]),
    params=ParamSchema([ParamSpec("discount", "double", 0.0)]),
)


def log_and_register(name: str) -> str:
    """Log model.py with its signature and register it; returns the version."""
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("model.py")),
                                       signature=SIGNATURE, pip_requirements=["mlflow", "pandas"])
    return mlflow.register_model(info.model_uri, name).version


def main() -> None:
    import httpx

    from agentwharf import agents

    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="main.default.pricer")
    args = parser.parse_args()
    mlflow.set_experiment("/examples/pyfunc")
    deployment = agents.deploy(args.name, log_and_register(args.name))
    host = os.environ.get("AGENTWHARF_HOST", "http://127.0.0.1:8710")
    body = {"dataframe_split": {"columns": ["quantity", "unit_price"], "data": [[2, 3.5], [1, 10.0]]},
            "params": {"discount": 0.1}}
    answer = httpx.post(f"{host}/serving-endpoints/{deployment.endpoint_name}/invocations", json=body, timeout=60,
                        headers={"Authorization": f"Bearer {os.environ['AGENTWHARF_TOKEN']}"})
    print(answer.json())  # {"predictions": [{"total": 6.3}, {"total": 9.0}]}


if __name__ == "__main__":
    main()
