"""The `agentwharf` command line."""

from __future__ import annotations

import typer

from agentwharf.cli import (access_cmds, endpoints, eval_cmd, inference, llm, monitor_cmds, platform_cmds, review_cmds,
                            rollout_cmds, serving_cmds)

app = typer.Typer(help="agentwharf: deploy, serve and govern MLflow agents on your own machines.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        from agentwharf import __version__

        typer.echo(f"agentwharf {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print agentwharf's version and exit.")) -> None:
    """agentwharf: deploy, serve and govern MLflow agents on your own machines."""
app.command()(platform_cmds.up)
app.command()(platform_cmds.down)
app.command()(platform_cmds.gateway)
app.command()(platform_cmds.status)
app.command()(serving_cmds.deploy)
app.command()(serving_cmds.query)
app.command()(endpoints.logs)
app.command("eval")(eval_cmd.eval_)
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(llm.app, name="llm")
app.add_typer(rollout_cmds.app, name="rollout")
app.add_typer(inference.app, name="inference")
app.add_typer(access_cmds.users, name="users")
app.add_typer(access_cmds.service_principals, name="service-principals")
app.add_typer(access_cmds.groups, name="groups")
app.add_typer(access_cmds.tokens, name="tokens")
app.add_typer(access_cmds.permissions, name="permissions")
app.add_typer(monitor_cmds.alerts, name="alerts")
app.add_typer(monitor_cmds.monitor, name="monitor")
app.add_typer(review_cmds.review, name="review")
app.add_typer(review_cmds.datasets, name="datasets")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
