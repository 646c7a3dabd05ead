"""`agentwharf endpoints list|get|delete|logs|metrics`."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from agentwharf.cli.output import console, handle_errors
from agentwharf.client import PlatformClient

app = typer.Typer(help="Serving endpoints.", no_args_is_help=True)


def _traffic(endpoint: dict) -> str:
    routes = endpoint.get("config", {}).get("traffic_config", {}).get("routes", [])
    return ", ".join(f"{r['served_model_name']}={r['traffic_percentage']}%" for r in routes) or "-"


@app.command("list")
@handle_errors
def list_() -> None:
    """List endpoints with their state and traffic split."""
    endpoints = PlatformClient().list_endpoints()
    table = Table("name", "ready", "config update", "traffic")
    for endpoint in endpoints:
        table.add_row(endpoint["name"], endpoint["state"]["ready"], endpoint["state"]["config_update"], _traffic(endpoint))
    console.print(table if endpoints else "No endpoints. Deploy one with `agentwharf deploy MODEL VERSION`.")


@app.command()
@handle_errors
def get(name: str) -> None:
    """Show one endpoint as JSON."""
    console.print_json(json.dumps(PlatformClient().get_endpoint(name)))


@app.command()
@handle_errors
def delete(name: str, yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Delete an endpoint and stop its workers."""
    if not yes:
        typer.confirm(f"Delete endpoint {name} and stop its workers?", abort=True)
    PlatformClient().delete_endpoint(name)
    console.print(f"Deleted endpoint {name}.")


@app.command()
@handle_errors
def logs(name: str, entity: str = typer.Argument(..., help="The served entity (e.g. main-default-echo_3)."),
         build: bool = typer.Option(False, "--build", help="Only how the model was fetched and loaded.")) -> None:
    """Print a served version's worker log (needs CAN_MANAGE)."""
    kind = "build-logs" if build else "logs"
    print(PlatformClient().request("GET", f"/api/2.0/serving-endpoints/{name}/served-models/{entity}/{kind}")["logs"])


@app.command()
@handle_errors
def metrics(name: str) -> None:
    """Print an endpoint's metrics (Prometheus text: the last minute's requests, latency, in flight)."""
    client = PlatformClient()
    print(client.raw("GET", f"/api/2.0/serving-endpoints/{name}/metrics"), end="")
