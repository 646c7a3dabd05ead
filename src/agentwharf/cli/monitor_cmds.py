"""`agentwharf alerts create|list|delete|events` and `agentwharf monitor trends|copy-scorers|scorer-env`:
production monitoring of serving endpoints (``agentwharf.quality`` on the platform)."""

from __future__ import annotations

import datetime
from enum import Enum

import typer

from agentwharf.cli.connection import HomeOption, HostOption, JsonOption, connect
from agentwharf.cli.output import console, handle_errors, print_json, print_table
from agentwharf.scorer_copy import copy_scorers

alerts = typer.Typer(help="Alert rules on endpoints' monitoring metrics, fired to a signed webhook.", no_args_is_help=True)
monitor = typer.Typer(help="Production monitoring: trends, scorers carried to an endpoint, their environments.",
                      no_args_is_help=True)


class Operator(str, Enum):
    gt = ">"
    ge = ">="
    lt = "<"
    le = "<="


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


@alerts.command("create")
@handle_errors
def create_alert(
    endpoint: str = typer.Argument(..., help="Endpoint name"),
    name: str = typer.Argument(..., help="The alert's name (unique on the endpoint)"),
    metric: str = typer.Option(..., "--metric", help="error_rate, latency_p95_ms, requests, scorer:<name>:pass_rate|mean|"
                                                     "error_rate, feedback:<name>:positive_rate|mean"),
    threshold: float = typer.Option(..., "--threshold", help="Fires when the metric crosses it"),
    op: Operator = typer.Option(Operator.gt, "--operator", help="How the metric compares to the threshold to fire"),
    window: str = typer.Option("5m", "--window", help="Evaluated over this last window (30s, 5m, 1h)"),
    min_samples: int = typer.Option(10, "--min-samples", help="Fewer samples in the window neither fire nor clear it"),
    webhook: str = typer.Option(..., "--webhook", help="POSTed JSON when it fires and when it clears"),
    served_entity: str = typer.Option(None, "--served-entity", help="One served version only"),
    host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False,
) -> None:
    """Create an alert rule. Its signing secret is printed once: keep it to verify the webhook."""
    body = {"name": name, "metric": metric, "operator": op.value, "threshold": threshold, "window": window,
            "min_samples": min_samples, "webhook_url": webhook, **({"served_entity": served_entity} if served_entity else {})}
    rule = connect(host, home).request("POST", f"/api/2.0/serving-endpoints/{endpoint}/alerts", json=body)
    if as_json:
        print_json(rule)
        return
    console.print(f"Created alert {name} on {endpoint}: {metric} {op.value} {threshold:g} over {window} "
                  f"(at least {min_samples} samples) -> {webhook}", highlight=False)
    console.print(f"  Signing secret (shown once): {rule['secret']}", highlight=False)
    console.print("  Deliveries carry X-Agentwharf-Signature: t=<unix seconds>,v1=<HMAC-SHA256 of '<t>.<body>'>",
                  highlight=False)


@alerts.command("list")
@handle_errors
def list_alerts(endpoint: str = typer.Argument(None, help="Only this endpoint's"),
                host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List alert rules with their state (OK, FIRING, INSUFFICIENT_DATA) and last value."""
    client = connect(host, home)
    path = f"/api/2.0/serving-endpoints/{endpoint}/alerts" if endpoint else "/api/2.0/agentwharf/alerts"
    rules = client.request("GET", path)["alerts"]
    if as_json:
        print_json(rules)
        return
    rows = [(r["endpoint"], r["name"], f"{r['metric']} {r['operator']} {r['threshold']:g}", r["window"], r["state"],
             "-" if r["last_value"] is None else f"{r['last_value']:g} ({r['last_samples']} samples)",
             _when(r["changed_ms"])) for r in rules]
    print_table(("endpoint", "alert", "condition", "window", "state", "last value", "changed"), rows,
                empty="No alerts. Create one with `agentwharf alerts create ENDPOINT NAME --metric M --threshold T "
                      "--webhook URL`.")


@alerts.command("delete")
@handle_errors
def delete_alert(endpoint: str, name: str, host: HostOption = None, home: HomeOption = None) -> None:
    """Delete an alert rule (and its history)."""
    connect(host, home).request("DELETE", f"/api/2.0/serving-endpoints/{endpoint}/alerts/{name}")
    console.print(f"Deleted alert {name} of {endpoint}.")


@alerts.command("events")
@handle_errors
def alert_events(endpoint: str, name: str, host: HostOption = None, home: HomeOption = None,
                 as_json: JsonOption = False) -> None:
    """An alert's firings and clearings, newest first, with their webhook deliveries."""
    found = connect(host, home).request("GET", f"/api/2.0/serving-endpoints/{endpoint}/alerts/{name}/events")["events"]
    if as_json:
        print_json(found)
        return
    rows = [(_when(e["created_ms"]), e["state"], e["value"], e["samples"],
             _when(e["delivered_ms"]) if e["delivered_ms"] else f"not yet ({e['last_error'] or 'pending'})",
             e["attempts"]) for e in found]
    print_table(("at", "state", "value", "samples", "delivered", "attempts"), rows, empty="Never fired.")


@monitor.command("trends")
@handle_errors
def trends(endpoint: str, since: str = typer.Option("1h", "--since", help="How far back (30m, 1d) or a time"),
           bucket: str = typer.Option(None, "--bucket", help="Bucket length (1m, 1h); default about 60 buckets"),
           host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Per-bucket requests, error rate, p95 latency and each scorer's pass rate or mean."""
    params = {"since": since, **({"bucket": bucket} if bucket else {})}
    found = connect(host, home).request("GET", f"/api/2.0/serving-endpoints/{endpoint}/monitoring", params=params)
    if as_json:
        print_json(found)
        return
    names = sorted({n for p in found["overall"] for n in p["scorers"]})
    rows = []
    for point in found["overall"]:
        if not point["requests"] and not point["scorers"]:
            continue
        figures = []
        for name in names:
            counts = point["scorers"].get(name)
            value = None if counts is None else (counts["pass_rate"] if counts["pass_rate"] is not None else counts["mean"])
            figures.append("-" if value is None else f"{value:.2f}")
        rows.append((_when(point["t"]), point["requests"], "-" if point["error_rate"] is None else f"{point['error_rate']:.2%}",
                     "-" if point["p95_ms"] is None else f"{point['p95_ms']:.0f}", *figures))
    print_table(("from", "requests", "errors", "p95 ms", *names), rows, empty=f"No traffic on {endpoint} since {since}.")


@monitor.command("copy-scorers")
@handle_errors
def copy(endpoint: str = typer.Argument(..., help="The serving endpoint whose live traces they will score"),
         from_experiment: str = typer.Option(None, "--from-experiment", help="Experiment id to copy from (default: the "
                                             "experiment of the run that logged the newest served version)"),
         scorer: list[str] = typer.Option(None, "--scorer", help="Only these scorers (repeat)"),
         sample_rate: float = typer.Option(1.0, "--sample-rate", help="For scorers the source does not run online"),
         filter_string: str = typer.Option(None, "--filter", help="An MLflow trace filter, with --sample-rate"),
         host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Register and start the development experiment's scorers on the endpoint's live traffic."""
    copied = copy_scorers(connect(host, home), endpoint, from_experiment, scorer or None, sample_rate, filter_string)
    if as_json:
        print_json([c.__dict__ for c in copied])
        return
    print_table(("scorer", "version", "sample rate", "filter"),
                [(c.name, c.version, c.sample_rate, c.filter_string or "-") for c in copied],
                empty="The development experiment has no registered scorers.")


@monitor.command("scorer-env")
@handle_errors
def scorer_env(endpoint: str, scorer: str,
               environment: str = typer.Argument(None, help="platform, model (the answering version's) or "
                                                            "models:/NAME/VERSION; omit to show the current one"),
               host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show or choose where a custom scorer's code runs (always sandboxed)."""
    client = connect(host, home)
    path = f"/api/2.0/serving-endpoints/{endpoint}/scorers/{scorer}/environment"
    found = client.request("PUT", path, json={"environment": environment}) if environment else client.request("GET", path)
    if as_json:
        print_json(found)
        return
    console.print(f"{scorer} on {endpoint}: {found['environment']} ({found['state']})"
                  + (f": {found['message']}" if found.get("message") else ""), highlight=False)
