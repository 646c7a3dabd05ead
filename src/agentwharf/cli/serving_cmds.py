"""`agentwharf deploy` and `agentwharf query`."""

from __future__ import annotations

from enum import Enum

import typer

from agentwharf.cli import rollout_cmds
from agentwharf.cli.connection import HomeOption, HostOption, connect
from agentwharf.cli.output import console, fail, handle_errors


class WorkloadSize(str, Enum):
    """Databricks' workload sizes: 1, 2 and 4 worker processes by default."""

    Small = "Small"
    Medium = "Medium"
    Large = "Large"


class EnvManager(str, Enum):
    uv = "uv"
    local = "local"


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            fail(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


@handle_errors
def deploy(
    model: str = typer.Argument(..., help="Registered model name, catalog.schema.model"),
    version: str = typer.Argument(..., help="Model version to serve"),
    endpoint: str = typer.Option(None, "--endpoint", help="Endpoint name (default agents_<catalog>-<schema>-<model>)"),
    workload_size: WorkloadSize = typer.Option(WorkloadSize.Small, "--workload-size", help="Worker processes: Small 1, Medium 2, Large 4"),
    scale_to_zero: bool = typer.Option(False, "--scale-to-zero", help="Stop idle workers; restart on demand"),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE for the worker's environment (repeatable)"),
    env_manager: EnvManager = typer.Option(None, "--env-manager",
                                           help="uv: run in an environment built from the model's requirements; local: in "
                                                "the platform's own (default: the platform's setting)"),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds to wait for the version to answer"),
    canary: int = typer.Option(None, "--canary", min=1, max=99,
                               help="Roll out: start at this share of the traffic and earn the rest through --gate"),
    shadow: int = typer.Option(None, "--shadow", min=1, max=100,
                               help="Roll out behind a shadow: copy this share of live requests to the new version "
                                    "(answers recorded and judged, never returned); with --canary, a canary follows"),
    gate: list[str] = typer.Option([], "--gate", help="With --canary/--shadow: 'scorer>=0.98', 'error_rate<=0.01', "
                                                      "'p95_latency_ms<=1.2x' (x: vs the current version); repeatable"),
    min_requests: int = typer.Option(200, "--min-requests", min=1, help="With --canary: requests per step before a promotion"),
    max_duration: str = typer.Option("2h", "--max-duration", help="With --canary: roll back if not promoted by then"),
    host: HostOption = None,
    home: HomeOption = None,
) -> None:
    """Deploy a registered model version and wait until it answers."""
    body = {"model_name": model, "model_version": version, "endpoint_name": endpoint,
            "workload_size": workload_size.value, "scale_to_zero": scale_to_zero,
            "environment_vars": _env_pairs(env), "env_manager": env_manager.value if env_manager else None}
    if canary is None and shadow is None and gate:
        fail("--gate needs --canary (the share of traffic the new version starts with) or --shadow")
    if canary is not None or shadow is not None:
        body["rollout"] = {"gates": [rollout_cmds.parse_gate(g) for g in gate], "min_requests": min_requests,
                           "max_duration": max_duration, "canary_percent": canary, "shadow_percent": shadow}
        body["rollout"] = {k: v for k, v in body["rollout"].items() if v is not None}
    client = connect(host, home)
    answer = client.deploy(body)
    chain = answer["deployed_chain"]
    with console.status(f"Starting {chain['served_entity_name']} on {chain['endpoint_name']}...") as status:
        client.wait_for_entity(chain["endpoint_name"], chain["served_entity_name"], timeout,
                               on_progress=lambda msg, s: status.update(f"{chain['served_entity_name']}: {msg} ({s:.0f}s)"))
    console.print(f"[green]Deployed[/] {model} version {version} to endpoint [bold]{chain['endpoint_name']}[/]")
    console.print(f"  query endpoint: {chain['query_endpoint']}")
    console.print(f"  endpoint URL:   {chain['endpoint_url']}")
    if canary is not None or shadow is not None:
        now = f"shadow of {shadow}% of requests, 0% answered" if shadow is not None else f"{canary}%"
        console.print(f"  rollout:        {now} now; follow it with: agentwharf rollout status {chain['endpoint_name']}")


@handle_errors
def query(
    endpoint: str = typer.Argument(..., help="Endpoint name"),
    text: str = typer.Argument(..., help="The user message"),
    stream: bool = typer.Option(False, "--stream", help="Stream the answer as it is produced"),
    host: HostOption = None,
    home: HomeOption = None,
) -> None:
    """Send one user message to an endpoint and print the answer."""
    client = connect(host, home)
    body = {"input": [{"role": "user", "content": text}]}
    if not stream:
        console.print(_text_of(client.query(endpoint, body)), highlight=False)
        return
    streamed = set()  # items whose text arrived as deltas: their final event repeats it
    for event in client.query_stream(endpoint, body):
        if event.get("type") == "response.output_text.delta":
            streamed.add(event.get("item_id"))
            console.print(event.get("delta", ""), end="", highlight=False)
        elif event.get("type") == "response.output_item.done":
            item = event.get("item", {})
            console.print("" if item.get("id") in streamed else _text_of({"output": [item]}), highlight=False)
        elif "error_code" in event:
            fail(f"{event.get('message')} ({event['error_code']})")


def _text_of(response: dict) -> str:
    texts = []
    for item in response.get("output", []):
        for part in item.get("content", []) or []:
            if isinstance(part, dict) and "text" in part:
                texts.append(part["text"])
    return "\n".join(texts) if texts else str(response)
