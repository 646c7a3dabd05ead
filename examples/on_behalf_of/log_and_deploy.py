"""Log the on-behalf-of example with its auth policy, register it and deploy it.

    MLFLOW_TRACKING_URI=http://127.0.0.1:8710 MLFLOW_TRACKING_TOKEN=$(cat .agentwharf/admin.token) \\
    AGENTWHARF_TOKEN=$(cat .agentwharf/admin.token) \\
        .venv/bin/python examples/on_behalf_of/log_and_deploy.py --helper agents_main-default-echo

The helper endpoint must exist (``make quickstart`` deploys agents_main-default-echo). Query
the result as a user who may query it; the answer comes from the helper with *their* rights.
"""

import argparse
from pathlib import Path

import mlflow
from mlflow.models.auth_policy import AuthPolicy, SystemAuthPolicy, UserAuthPolicy
from mlflow.models.resources import DatabricksServingEndpoint

from agentwharf import agents

parser = argparse.ArgumentParser()
parser.add_argument("--helper", default="agents_main-default-echo")
parser.add_argument("--name", default="main.default.on_behalf_of")
args = parser.parse_args()

mlflow.set_experiment("/examples/on-behalf-of")
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(
        name="agent",
        python_model=str(Path(__file__).with_name("agent.py")),
        auth_policy=AuthPolicy(
            system_auth_policy=SystemAuthPolicy(resources=[DatabricksServingEndpoint(endpoint_name=args.helper)]),
            user_auth_policy=UserAuthPolicy(api_scopes=["serving.serving-endpoints"]),
        ),
        pip_requirements=["mlflow", "httpx"],
    )
version = mlflow.register_model(info.model_uri, args.name).version
deployment = agents.deploy(args.name, version, environment_vars={"HELPER_ENDPOINT": args.helper})
print(f"deployed {args.name} v{version} at {deployment.query_endpoint}")
