"""`agentwharf up`, `down`, `status`."""

from __future__ import annotations

from pathlib import Path

import typer

from agentwharf.cli.output import console, fail, handle_errors
from agentwharf.client import PlatformClient
from agentwharf.platform import runner
from agentwharf.settings import DEFAULT_PORT, ClientSettings, PlatformSettings

HomeOption = typer.Option(None, "--home", help="Platform home (database, artifacts, logs). Default: $AGENTWHARF_HOME or ./.agentwharf")


def _settings(home: Path | None, host: str | None = None, port: int | None = None) -> PlatformSettings:
    overrides = {k: v for k, v in {"home": home, "listen_host": host, "port": port}.items() if v is not None}
    return PlatformSettings(**overrides)


def up(
    home: Path | None = HomeOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="Port of the base URL."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background and return once it answers."),
) -> None:
    """Start the platform: MLflow server, control plane and serving gateway on one base URL."""
    settings = _settings(home, host, port)
    try:
        if not detach:
            console.print(f"Starting agentwharf on [bold]{settings.base_url}[/] (home {settings.home.resolve()}); Ctrl-C stops it.")
            runner.serve(settings)
            return
        with console.status("Starting agentwharf (MLflow server, control plane, gateway)...") as status:
            running = runner.start_detached(settings, on_wait=lambda s: status.update(f"Starting agentwharf... {s:.0f}s"))
    except runner.PlatformError as error:
        fail(str(error))
    console.print(f"agentwharf is up at [bold]{running.base_url}[/] (pid {running.pid}, home {settings.home.resolve()})")
    console.print(f"  MLflow UI: {running.base_url}/    stop with: agentwharf down --home {settings.home}")
    if settings.admin_token_file.exists():
        console.print(f"  admin token: {settings.admin_token_file} (mode 0600); export AGENTWHARF_TOKEN=$(cat {settings.admin_token_file})")


def down(home: Path | None = HomeOption) -> None:
    """Stop the platform running on this home, its workers and its MLflow server."""
    settings = _settings(home)
    with console.status("Stopping agentwharf..."):
        stopped = runner.stop(settings)
    if stopped is None:
        console.print(f"No platform is running on home {settings.home.resolve()}.")
    else:
        console.print(f"Stopped agentwharf (pid {stopped.pid}, {stopped.base_url}).")


@handle_errors
def status() -> None:
    """Show whether the platform answers, and its endpoints."""
    client = PlatformClient(ClientSettings())
    health = client.health()
    console.print(f"[green]up[/] at {health['base_url']} (pid {health['pid']}, home {health['home']})")
    console.print(f"  MLflow server: {health['mlflow']}   endpoints: {health['endpoints']}   served versions: {health['served_versions'] or 'none'}")
    spool = health["spool"]
    console.print(f"  trace spool: {spool['pending_bytes']} bytes pending, writer lag {spool['writer_lag_seconds']:.1f}s, "
                  f"{spool['records']} records spooled, {spool['rejected']} rejected (spool full)")
