"""Point an LLM endpoint at your model server, then log, register and deploy the tool-calling agent
that uses it.

    export MLFLOW_TRACKING_URI=http://127.0.0.1:8710 MLFLOW_TRACKING_TOKEN=$(cat .agentwharf/admin.token)
    export AGENTWHARF_TOKEN=$(cat .agentwharf/admin.token)
    export PROVIDER_KEY=...          # the model server's key (any value for a server that wants none)
    .venv/bin/python examples/llm_agent/log_and_deploy.py \\
        --api-base http://127.0.0.1:11434/v1 --model llama3.1:8b   # Ollama; vLLM: http://host:8000/v1

The key goes to the platform once, in the create request, and from there only into MLflow's
encrypted secret store. The agent declares the endpoint as a resource; with ``--on-behalf-of``
it also asks for the caller's token, so each of its LLM calls counts against the caller's own
rate limits. Query the agent like any other:

    curl -H "Authorization: Bearer $AGENTWHARF_TOKEN" -d '{"input": [{"role": "user", "content": "Weather in Oslo?"}]}' \\
        http://127.0.0.1:8710/serving-endpoints/agents_main-default-llm_agent/invocations
"""

import argparse
import os
from pathlib import Path

import mlflow
from mlflow.models.auth_policy import AuthPolicy, SystemAuthPolicy, UserAuthPolicy
from mlflow.models.resources import DatabricksServingEndpoint

from agentwharf import agents
from agentwharf.client import PlatformClient
from agentwharf.errors import NotFound

parser = argparse.ArgumentParser()
parser.add_argument("--llm-endpoint", default="my-llm")
parser.add_argument("--api-base", help="The model server's OpenAI-compatible base URL (to create the LLM endpoint)")
parser.add_argument("--model", help="The model server's model name (to create the LLM endpoint)")
parser.add_argument("--name", default="main.default.llm_agent")
parser.add_argument("--on-behalf-of", action="store_true", help="Call the LLM with each caller's own token")
parser.add_argument("--env-manager", choices=["uv", "local"], help="Where the agent runs (default: the platform's choice)")
args = parser.parse_args()

client = PlatformClient()
try:
    client.get_endpoint(args.llm_endpoint)
except NotFound:
    if not (args.api_base and args.model):
        parser.error(f"LLM endpoint {args.llm_endpoint} does not exist: give --api-base and --model to create it")
    client.create_endpoint({"name": args.llm_endpoint, "config": {"served_entities": [{"external_model": {
        "name": args.model, "provider": "custom", "task": "llm/v1/chat",
        "openai_config": {"openai_api_base": args.api_base, "openai_api_key_plaintext": os.environ.get("PROVIDER_KEY", "none")},
    }}]}})
    print(f"created LLM endpoint {args.llm_endpoint} -> {args.model} at {args.api_base}")

resources = [DatabricksServingEndpoint(endpoint_name=args.llm_endpoint)]
policy = AuthPolicy(system_auth_policy=SystemAuthPolicy(resources=resources),
                    user_auth_policy=UserAuthPolicy(api_scopes=["serving.serving-endpoints"]) if args.on_behalf_of else None)
mlflow.set_experiment("/examples/llm-agent")
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(name="agent", python_model=str(Path(__file__).with_name("agent.py")),
                                   auth_policy=policy, pip_requirements=["mlflow", "openai"])
version = mlflow.register_model(info.model_uri, args.name).version
deployment = agents.deploy(args.name, version, environment_vars={"LLM_ENDPOINT": args.llm_endpoint},
                           env_manager=args.env_manager)
print(f"deployed {args.name} v{version} at {deployment.query_endpoint}")
