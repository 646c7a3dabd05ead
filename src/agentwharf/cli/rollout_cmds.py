"""`agentwharf rollout status|promote|abort ENDPOINT`, and the `--gate` syntax of `deploy --canary`.

    agentwharf deploy main.default.echo 2 --canary 10 --gate 'safety>=0.98' --gate 'error_rate<=0.01' \\
        --gate 'p95_latency_ms<=1.2x' --min-requests 200 --max-duration 2h
    agentwharf deploy main.default.echo 2 --shadow 100 --gate 'safety>=0.98'     # shadow, then 100%
"""

from __future__ import annotations

import re
from datetime import datetime

import typer

from agentwharf.cli.connection import HomeOption, HostOption, JsonOption, connect
from agentwharf.cli.output import console, fail, handle_errors, print_json, print_table
from agentwharf.rollouts import METRICS

app = typer.Typer(help="Quality-gated rollouts: a new version earns its traffic.", no_args_is_help=True)
_GATE = re.compile(r"^\s*([\w.\-:/]+)\s*(>=|<=)\s*(\d+(?:\.\d+)?)\s*(x?)\s*$")


def parse_gate(text: str) -> dict:
    """``safety>=0.98`` (a scorer's pass rate), ``safety>=0.95x`` (vs the current version),
    ``error_rate<=0.01`` (a metric's bound), ``p95_latency_ms<=1.2x`` (vs the current version)."""
    match = _GATE.match(text)
    if match is None:
        fail(f"--gate takes NAME>=VALUE for a scorer or METRIC<=VALUE for one of {', '.join(METRICS)} "
             f"(a trailing x compares with the current version), got {text!r}")
    name, op, value, ratio = match.groups()
    if name in METRICS:
        if op != "<=":
            fail(f"--gate {text!r}: a metric is bounded from above ({name}<=...)")
        return {"metric": name, "max_ratio" if ratio else "max": float(value)}
    if op != ">=":
        fail(f"--gate {text!r}: a scorer's pass rate is bounded from below ({name}>=...)")
    return {"scorer": name, "min_ratio" if ratio else "min_pass_rate": float(value)}


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S") if ms else ""


def _show(rollout: dict) -> None:
    console.print(f"[bold]{rollout['endpoint_name']}[/]: rollout of {rollout['candidate']} beside {rollout['current']}: "
                  f"[bold]{rollout['state']}[/], candidate at {rollout['traffic_percentage']}%")
    if rollout.get("shadowing"):
        copies = rollout.get("shadow") or {}
        console.print(f"  shadow: {rollout['spec'].get('shadow_percent')}% of live requests copied to the candidate, its "
                      f"answers never returned; copies sent {copies.get('sent', 0)}, dropped {copies.get('dropped', 0)}, "
                      f"failed {copies.get('failed', 0)}")
    window = rollout.get("window") or {}
    if window.get("gates"):
        print_table(["gate", "verdict", "candidate", "current", "samples", "why"],
                    [[g["gate"], g["verdict"], g["candidate"], g["current"], f"{g['samples']}/{g['needed']}", g["reason"]]
                     for g in window["gates"]])
    print_table(["time", "action", "traffic %", "by", "reason"],
                [[_when(d.get("at_ms")), d["action"], d.get("percent"), d.get("by") or "", d["reason"]]
                 for d in rollout["decisions"]])


@app.command()
@handle_errors
def status(endpoint: str = typer.Argument(..., help="Endpoint name"), as_json: JsonOption = False,
           host: HostOption = None, home: HomeOption = None) -> None:
    """The endpoint's latest rollout: state, gates over the current window, decisions."""
    rollout = connect(host, home).request("GET", f"/api/2.0/serving-endpoints/{endpoint}/rollout")
    print_json(rollout) if as_json else _show(rollout)


@app.command()
@handle_errors
def promote(endpoint: str = typer.Argument(..., help="Endpoint name"), host: HostOption = None, home: HomeOption = None) -> None:
    """Give the candidate all the traffic now."""
    rollout = connect(host, home).request("POST", f"/api/2.0/serving-endpoints/{endpoint}/rollout/promote")
    console.print(f"[green]Promoted[/] {rollout['candidate']} on {endpoint}: 100% of the traffic")


@app.command()
@handle_errors
def abort(endpoint: str = typer.Argument(..., help="Endpoint name"), host: HostOption = None, home: HomeOption = None) -> None:
    """Send all traffic back to the version serving before the rollout."""
    rollout = connect(host, home).request("POST", f"/api/2.0/serving-endpoints/{endpoint}/rollout/abort")
    console.print(f"[yellow]Aborted[/]: {rollout['current']} has 100% of the traffic on {endpoint}; "
                  f"{rollout['candidate']} stays served at 0%")
