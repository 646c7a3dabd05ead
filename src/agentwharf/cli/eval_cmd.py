"""`agentwharf eval MODEL --challenger V [--champion V|@alias] --dataset NAME --scorers module:attr`:
the champion/challenger gate (``agentwharf.quality.gate``), for a terminal or CI."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentwharf.cli.connection import HomeOption, HostOption, JsonOption, connect
from agentwharf.cli.output import console, fail, handle_errors, print_json


def require_mlflow(command: str) -> None:
    """Commands that run MLflow's client here need it (a client-only install has not)."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        fail(f"`agentwharf {command}` runs MLflow's client in this process: pip install 'agentwharf[server]' "
             "(or mlflow)")


def _point_mlflow_at(client) -> None:
    """MLflow's client talks to the same platform, as the same caller."""
    import mlflow

    os.environ.setdefault("MLFLOW_TRACKING_TOKEN", client.settings.resolved_token() or "")
    mlflow.set_tracking_uri(client.settings.host)


@handle_errors
def eval_(
    model: str = typer.Argument(..., help="Registered model (catalog.schema.model)"),
    challenger: str = typer.Option(..., "--challenger", help="The version that would take traffic"),
    champion: str = typer.Option(None, "--champion", help="A version or @alias (default: @champion)"),
    dataset: str = typer.Option(..., "--dataset", help="An MLflow evaluation dataset's name (the golden set)"),
    scorers: list[str] = typer.Option(..., "--scorers", help="module:attr of a scorer or a list of them (repeat)"),
    threshold: float = typer.Option(0.0, "--threshold", help="The most a scorer's mean may drop before the gate fails"),
    local: bool = typer.Option(False, "--local", help="Load both versions in this process instead of querying their "
                                                      "per-version endpoints"),
    summary_file: Path = typer.Option(None, "--summary-file", help="Write a markdown summary here (e.g. "
                                                                   "$GITHUB_STEP_SUMMARY; appended to)"),
    experiment: str = typer.Option(None, "--experiment", help="Experiment of the two runs (default /agentwharf/eval/MODEL)"),
    host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False,
) -> None:
    """Evaluate a challenger version against the champion on a golden dataset; exit 1 if it regresses."""
    require_mlflow("eval")
    import mlflow

    from agentwharf.quality import gate

    client = connect(host, home)
    _point_mlflow_at(client)
    champion_version = gate.resolve_version(model, champion)
    versions = {"champion": champion_version, "challenger": str(challenger)}
    # A version that is not deployed fails the command before the scorers, the dataset and the
    # first evaluation are loaded and run, not after.
    routes = {} if local else {role: gate.version_route(client, model, version) for role, version in versions.items()}
    chosen = gate.load_scorers(scorers)
    data = mlflow.genai.datasets.get_dataset(name=dataset)
    total = len(data.to_df())
    mlflow.set_experiment(experiment or f"/agentwharf/eval/{model}")
    comparison = uuid.uuid4().hex
    results: dict = {}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=as_json) as progress:
        for role, version in versions.items():
            task = progress.add_task(f"{role} v{version}: predicting and scoring", total=total)
            done = [0]

            def advance(task=task, done=done) -> None:
                # MLflow calls predict once more first, to check it: never past the total.
                done[0] += 1
                progress.update(task, completed=min(total, done[0]))

            predict = (gate.local_predict(model, version, advance) if local
                       else gate.endpoint_predict(client, routes[role], advance))
            results[role] = gate.evaluate_version(model, version, role, data, chosen, predict, comparison)
            progress.update(task, completed=total, description=f"{role} v{version}: done")
    rows = gate.compare(results["champion"], results["challenger"], threshold)
    summary = gate.markdown(model, results["champion"], results["challenger"], rows, threshold, dataset)
    if summary_file is not None:
        with open(summary_file, "a") as out:
            out.write(summary + "\n")
    regressed = [r.scorer for r in rows if r.regressed]
    if as_json:
        print_json({"model": model, "champion": results["champion"].__dict__, "challenger": results["challenger"].__dict__,
                    "comparison": [r.__dict__ for r in rows], "passed": not regressed})
    else:
        _show(model, results, rows, threshold, regressed)
    if regressed:
        raise typer.Exit(1)


def _show(model: str, results: dict, rows: list, threshold: float, regressed: list[str]) -> None:
    from agentwharf.quality import gate

    champion, challenger = results["champion"], results["challenger"]
    table = Table(title=f"{model}: v{challenger.version} (challenger) vs v{champion.version} (champion)")
    for column in ("scorer", f"v{champion.version}", f"v{challenger.version}", "delta", "95% CI", "rows", ""):
        table.add_column(column, justify="left" if column in ("scorer", "") else "right")
    for r in rows:
        interval = "-" if r.low is None else f"[{r.low:+.3f}, {r.high:+.3f}]"
        verdict = "[bold red]regressed[/]" if r.regressed else "[green]ok[/]"
        table.add_row(r.scorer, gate._figure(r.champion), gate._figure(r.challenger), gate._figure(r.delta, True),
                      interval, str(r.rows), verdict)
    console.print(table)
    console.print(f"MLflow runs: champion {champion.run_id}, challenger {challenger.run_id}", highlight=False)
    if regressed:
        console.print(f"[bold red]FAILED[/]: v{challenger.version} regresses on {', '.join(regressed)} "
                      f"(threshold {threshold:g})", highlight=False)
    else:
        console.print(f"[bold green]PASSED[/]: v{challenger.version} does not regress (threshold {threshold:g})",
                      highlight=False)
