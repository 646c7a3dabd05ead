"""`agentwharf up`, `down`, `status`."""

from __future__ import annotations

from pathlib import Path

import typer

from agentwharf.cli.connection import HomeOption, HostOption, JsonOption, connect
from agentwharf.cli.output import console, fail, handle_errors, print_json, print_table
from agentwharf.errors import InvalidConfiguration, Unauthenticated
from agentwharf.platform import runner
from agentwharf.settings import DEFAULT_PORT, PlatformSettings

UpHomeOption = typer.Option(None, "--home", help="Platform home (database, artifacts, logs). Default: $AGENTWHARF_HOME or ./.agentwharf")


def _settings(home: Path | None, host: str | None = None, port: int | None = None) -> PlatformSettings:
    """The platform's settings; a bad one ends the command with what is wrong with it (never a
    stack trace, nor the value itself: it may hold a password)."""
    import pydantic

    overrides = {k: v for k, v in {"home": home, "listen_host": host, "port": port}.items() if v is not None}
    try:
        return PlatformSettings(**overrides)
    except pydantic.ValidationError as error:
        problems = [f"AGENTWHARF_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg'].removeprefix('Value error, ')}"
                    for e in error.errors()]
        fail("Invalid configuration:\n  " + "\n  ".join(problems))


def up(
    home: Path | None = UpHomeOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="Port of the base URL."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background and return once it answers."),
) -> None:
    """Start the platform: MLflow server, control plane and serving gateway on one base URL."""
    if missing := runner.missing_server_packages():
        fail(f"`agentwharf up` runs the platform, which needs the server packages ({', '.join(missing)} missing): "
             "pip install 'agentwharf[server]'")
    settings = _settings(home, host, port)
    try:
        if not detach:
            console.print(f"Starting agentwharf on [bold]{settings.base_url}[/] (home {settings.home.resolve()}); Ctrl-C stops it.")
            _print_exports(settings)
            runner.serve(settings)
            return
        with console.status("Starting agentwharf (MLflow server, control plane, gateway)...") as status:
            running = runner.start_detached(settings, on_wait=lambda s: status.update(f"Starting agentwharf... {s:.0f}s"))
    except runner.PlatformError as error:
        fail(str(error))
    except InvalidConfiguration as error:
        fail(error.message)
    console.print(f"agentwharf is up at [bold]{running.base_url}[/] (pid {running.pid}, home {settings.home.resolve()})")
    console.print(f"  MLflow UI: {running.base_url}/    stop with: agentwharf down --home {settings.home}")
    _print_exports(settings)


def gateway(
    control: str = typer.Option(..., "--control", help="The control process's base URL (the platform started by `agentwharf up`)."),
    index: int = typer.Option(1, "--index", min=1, help="This gateway's number, 1 and up: its spool and log are its own. "
                              "Restart a gateway with the same number so its writer stores what it left."),
    home: Path | None = UpHomeOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(..., "--port", help="Port to listen on."),
) -> None:
    """Run one more serving gateway for the platform of this home (its /serving-endpoints/ routes
    only), for a load balancer to spread traffic over. It reads routes, workers and tokens from
    the platform's database and stores its records through a spool and writer of its own."""
    if missing := runner.missing_server_packages():
        fail(f"`agentwharf gateway` needs the server packages ({', '.join(missing)} missing): pip install 'agentwharf[server]'")
    settings = _settings(home, host, port)
    if not control.startswith(("http://", "https://")):
        fail(f"--control must be the platform's base URL (http://host:port), got {control!r}")
    console.print(f"Starting gateway {index} on [bold]{settings.base_url}[/] for the platform at {control} "
                  f"(home {settings.home.resolve()}); it waits for the platform to answer first. Ctrl-C stops it.")
    console.print(f"  its log: {settings.logs_dir / f'gateway-{index}.log'}", highlight=False)
    try:
        runner.serve_gateway(settings, index, control)
    except runner.PlatformError as error:
        fail(str(error))


def _print_exports(settings: PlatformSettings) -> None:
    """What a shell needs for every client (agentwharf, MLflow, Databricks') to use this platform."""
    token = f"$(cat {settings.admin_token_file})"
    console.print("  Clients find it with:", highlight=False)
    for line in (f"export AGENTWHARF_HOST={settings.base_url} AGENTWHARF_TOKEN={token}",
                 f"export MLFLOW_TRACKING_URI={settings.base_url} MLFLOW_TRACKING_TOKEN={token}"):
        console.print(f"    {line}", highlight=False, soft_wrap=True)


def down(home: Path | None = UpHomeOption, host: HostOption = None) -> None:
    """Stop the platform of this home (or the one at --host, if it runs on this machine)."""
    if host is not None:
        home = _local_home_of(host)
    settings = _settings(home)
    with console.status("Stopping agentwharf..."):
        stopped = runner.stop(settings)
    if stopped is None:
        console.print(f"No platform is running on home {settings.home.resolve()}.")
    else:
        console.print(f"Stopped agentwharf (pid {stopped.pid}, {stopped.base_url}).")


@handle_errors
def _local_home_of(host: str) -> Path:
    health = connect(host).health()
    home = Path(health["home"])
    running = runner.read_pid_file(_settings(home))
    if running is None or running.pid != health["pid"]:
        fail(f"The platform at {host} (pid {health['pid']}, home {home}) does not run on this machine; "
             "stop it where it runs")
    return home


@handle_errors
def status(host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show whether the platform answers, and each endpoint's state (failures in red)."""
    client = connect(host, home)
    health = client.health()
    try:
        endpoints = client.list_endpoints()
    except Unauthenticated:
        endpoints = None
    if as_json:
        print_json({**health, "endpoint_states": None if endpoints is None else [_state(e) for e in endpoints]})
        return
    _print_health(health)
    if endpoints is None:
        console.print("  endpoints: not shown without a valid token (set AGENTWHARF_TOKEN, or use --home on the "
                      "platform's machine)")
        return
    _print_endpoints(endpoints)


def _print_health(health: dict) -> None:
    console.print(f"[green]up[/] at {health['base_url']} (pid {health['pid']}, home {health['home']})")
    console.print(f"  MLflow server: {health['mlflow']}   served versions: {health['served_versions'] or 'none'}")
    spool = health["spool"]
    console.print(f"  trace spool: {spool['pending_bytes']} bytes pending, writer lag {spool['writer_lag_seconds']:.1f}s, "
                  f"{spool['records']} records spooled, {spool['rejected']} rejected (spool full)")


def _print_endpoints(endpoints: list[dict]) -> None:
    rows = []
    for endpoint in endpoints:
        state = _state(endpoint)
        failed = state["config_update"] == "UPDATE_FAILED" or any(s == "DEPLOYMENT_FAILED" for s in state["versions"].values())
        mark = "[red]" if failed else ("[green]" if state["ready"] == "READY" else "[yellow]")
        versions = ", ".join(f"{name}: {s}" for name, s in state["versions"].items()) or "-"
        rows.append((state["name"], f"{mark}{state['ready']}[/]", state["config_update"], versions))
    print_table(("endpoint", "ready", "config update", "versions"), rows,
                empty="  No endpoints. Deploy one with `agentwharf deploy MODEL VERSION`.")


def _state(endpoint: dict) -> dict:
    served = endpoint.get("config", {}).get("served_entities", []) + endpoint.get("pending_config", {}).get("served_entities", [])
    return {"name": endpoint["name"], "ready": endpoint["state"]["ready"], "config_update": endpoint["state"]["config_update"],
            "versions": {e["name"]: e["state"]["deployment"] for e in served}}

