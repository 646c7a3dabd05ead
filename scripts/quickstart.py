"""`make quickstart`: start the platform, deploy the guide's EchoAgent, query it three ways.

Safe to run again: the platform is reused, a new model version is registered and deployed at
100% (older ones stay served at 0%; beyond a few, the oldest are retired).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "main.default.echo"
KEEP_VERSIONS = 3


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", default=".agentwharf")
    parser.add_argument("--port", default="8710")
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    agentwharf = str(Path(sys.executable).with_name("agentwharf"))

    step(f"Starting agentwharf in the background (home {args.home})")
    subprocess.run([agentwharf, "up", "--detach", "--home", args.home, "--port", args.port], check=True)

    # Every client below finds the platform, and authenticates, through these variables. The
    # first start of a home writes its admin's token to <home>/admin.token (mode 0600).
    token = (Path(args.home) / "admin.token").read_text().strip()
    os.environ["MLFLOW_TRACKING_URI"] = base
    os.environ["AGENTWHARF_HOST"] = base
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    os.environ["AGENTWHARF_TOKEN"] = token
    print(f"using the admin token from {Path(args.home) / 'admin.token'}")

    step(f"Logging examples/echo/agent.py (models from code) and registering it as {MODEL}")
    version = subprocess.run([sys.executable, str(ROOT / "examples/echo/log_and_register.py"), "--name", MODEL],
                             check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    print(f"registered {MODEL} version {version}")

    from agentwharf import agents

    served = sorted(agents.get_deployments(MODEL), key=lambda d: int(d.model_version))
    for old in served[: max(0, len(served) - KEEP_VERSIONS + 1)]:
        print(f"retiring old version {old.model_version}")
        agents.delete_deployment(MODEL, old.model_version)

    step(f"Deploying {MODEL} version {version} with agents.deploy")
    deployment = agents.deploy(MODEL, version)
    endpoint = deployment.endpoint_name
    print(f"endpoint {endpoint} serves version {version} at 100%")

    step("Querying with curl")
    body = json.dumps({"input": [{"role": "user", "content": "Hello from curl"}]})
    command = ["curl", "-sS", "-X", "POST", "-H", "Content-Type: application/json", "-H", "Authorization: Bearer $AGENTWHARF_TOKEN",
               "-d", body, f"{base}/serving-endpoints/{endpoint}/invocations"]
    print("$ " + " ".join(f"'{c}'" if " " in c or "{" in c else c for c in command))
    command[7] = f"Authorization: Bearer {token}"
    print(subprocess.run(command, check=True, capture_output=True, text=True).stdout)

    step("Querying with the official openai client")
    import openai

    client = openai.OpenAI(base_url=f"{base}/serving-endpoints", api_key=token)
    print(client.responses.create(model=endpoint, input="Hello from openai").output_text)

    step("Streaming with the openai client")
    for event in client.responses.create(model=endpoint, input="Hello from a stream", stream=True):
        if event.type == "response.output_text.delta":
            print(f"[delta] {event.delta!r}")
        elif event.type == "response.completed":
            print("[completed]")

    experiment = json.loads(subprocess.run(["curl", "-sS", "-H", f"Authorization: Bearer {token}", f"{base}/api/2.0/serving-endpoints/{endpoint}"],
                                           check=True, capture_output=True, text=True).stdout)["experiment_id"]
    step("Done")
    print(f"Endpoint:   {deployment.endpoint_url}")
    print(f"This version: {deployment.query_endpoint}")
    print(f"MLflow UI:  {base}/#/experiments/{experiment}  (the endpoint's experiment; sign in with the admin token)")
    print(f"Stop with:  make stop   (or: .venv/bin/agentwharf down --home {args.home})")


if __name__ == "__main__":
    main()
