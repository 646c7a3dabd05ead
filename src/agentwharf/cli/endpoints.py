"""`agentwharf endpoints list|get|delete|logs|metrics`."""

from __future__ import annotations

import sys
import time

import typer

from agentwharf.cli.connection import HomeOption, HostOption, JsonOption, connect
from agentwharf.cli.output import console, fail, handle_errors, print_json, print_table

app = typer.Typer(help="Serving endpoints.", no_args_is_help=True)


def _traffic(endpoint: dict) -> str:
    routes = endpoint.get("config", {}).get("traffic_config", {}).get("routes", [])
    return ", ".join(f"{r['served_model_name']}={r['traffic_percentage']}%" for r in routes) or "-"


@app.command("list")
@handle_errors
def list_(host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List endpoints with their state and traffic split."""
    endpoints = connect(host, home).list_endpoints()
    if as_json:
        print_json(endpoints)
        return
    rows = [(e["name"], e["state"]["ready"], e["state"]["config_update"], _traffic(e)) for e in endpoints]
    print_table(("name", "ready", "config update", "traffic"), rows,
                empty="No endpoints. Deploy one with `agentwharf deploy MODEL VERSION`.")


@app.command()
@handle_errors
def get(name: str, host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show one endpoint: its state and served versions (everything with --json)."""
    endpoint = connect(host, home).get_endpoint(name)
    if as_json:
        print_json(endpoint)
        return
    state = endpoint["state"]
    console.print(f"[bold]{endpoint['name']}[/]  ready: {state['ready']}  config update: {state['config_update']}  "
                  f"your permission: {endpoint.get('permission_level')}", highlight=False)
    if message := state.get("config_update_message"):
        console.print(f"  last update: {message}", highlight=False)
    console.print(f"  URL: {endpoint['endpoint_url']}", highlight=False)
    traffic = {r["served_model_name"]: r["traffic_percentage"]
               for r in endpoint.get("config", {}).get("traffic_config", {}).get("routes", [])}
    served = [(e, "") for e in endpoint.get("config", {}).get("served_entities", [])]
    served += [(e, " (pending)") for e in endpoint.get("pending_config", {}).get("served_entities", [])]
    rows = [(e["name"] + pending, _model(e), f"{traffic.get(e['name'], 0)}%",
             e.get("workload_size", "-"), e["state"]["deployment"], e["state"].get("deployment_state_message", ""))
            for e, pending in served]
    print_table(("served entity", "model", "traffic", "size", "state", "message"), rows, empty="  No served versions.")


def _model(entity: dict) -> str:
    if "external_model" in entity:
        return f"{entity['external_model']['provider']}/{entity['external_model']['name']} (external)"
    return f"{entity['entity_name']} v{entity['entity_version']}"


@app.command()
@handle_errors
def delete(name: str, yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
           host: HostOption = None, home: HomeOption = None) -> None:
    """Delete an endpoint and stop its workers."""
    if not yes:
        typer.confirm(f"Delete endpoint {name} and stop its workers?", abort=True)
    connect(host, home).delete_endpoint(name)
    console.print(f"Deleted endpoint {name}.")


@handle_errors
def logs(
    endpoint: str = typer.Argument(..., help="Endpoint name"),
    entity: str = typer.Option(None, "--entity", help="The served entity (default: the one with the most traffic)."),
    build: bool = typer.Option(False, "--build", help="How its environment was built and the model loaded."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing what is added, until Ctrl-C."),
    host: HostOption = None,
    home: HomeOption = None,
) -> None:
    """Print a served version's worker log (needs CAN_MANAGE on the endpoint)."""
    client = connect(host, home)
    entity = entity or _busiest_entity(client.get_endpoint(endpoint))
    path = f"/api/2.0/serving-endpoints/{endpoint}/served-models/{entity}/{'build-logs' if build else 'logs'}"
    shown = ""
    while True:
        text = client.request("GET", path)["logs"]
        # The answer is the log's current tail: print what was not shown yet (all of it after
        # a restart, when the tail no longer continues what was shown).
        sys.stdout.write(text[len(shown):] if text.startswith(shown) else text)
        sys.stdout.flush()
        shown = text
        if not follow:
            return
        time.sleep(1.0)


def _busiest_entity(endpoint: dict) -> str:
    routes = endpoint.get("config", {}).get("traffic_config", {}).get("routes", [])
    if not routes:
        fail(f"Endpoint {endpoint['name']} serves no version yet; name one with --entity")
    return max(routes, key=lambda r: r["traffic_percentage"])["served_model_name"]


@app.command()
@handle_errors
def metrics(name: str, host: HostOption = None, home: HomeOption = None) -> None:
    """Print an endpoint's metrics (Prometheus text: the last minute's requests, latency, in flight)."""
    print(connect(host, home).raw("GET", f"/api/2.0/serving-endpoints/{name}/metrics"), end="")
