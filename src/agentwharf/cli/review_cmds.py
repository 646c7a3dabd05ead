"""`agentwharf review add-traces|add-rule|rules|delete-rule` and `agentwharf datasets add-from-traces`:
production feedback back into data (the guide's step 9). Traces with negative feedback or a
failing scorer go to a labeling session (``mlflow.genai.labeling``) for people to label; their
labelled expectations go into the golden dataset the next ``agentwharf eval`` reads."""

from __future__ import annotations

import os

import typer

from agentwharf.cli.connection import HomeOption, HostOption, JsonOption, connect
from agentwharf.cli.output import console, fail, handle_errors, print_json, print_table

review = typer.Typer(help="Send endpoints' traces to labeling sessions, by hand or by rule.", no_args_is_help=True)
datasets = typer.Typer(help="Evaluation datasets (the golden set) from labelled traces.", no_args_is_help=True)

FilterOption = typer.Option(None, "--filter", help="An MLflow trace filter, such as \"feedback.thumbs = 'false'\" "
                                                   "or \"feedback.safety = 'no'\"")


def _mlflow(client):
    """MLflow's client pointed at the same platform, as the same caller."""
    from agentwharf.cli.eval_cmd import require_mlflow

    require_mlflow("review/datasets")
    import mlflow

    os.environ.setdefault("MLFLOW_TRACKING_TOKEN", client.settings.resolved_token() or "")
    mlflow.set_tracking_uri(client.settings.host)
    return mlflow


def _session(mlflow, experiment_id: str, name: str, create: bool = True):
    """The endpoint experiment's labeling session of that name (made if missing)."""
    from mlflow.genai import labeling

    mlflow.set_experiment(experiment_id=experiment_id)
    found = [s for s in labeling.get_labeling_sessions() if s.name == name]
    if found:
        return found[0]
    if not create:
        fail(f"No labeling session {name!r} in the endpoint's experiment")
    return labeling.create_labeling_session(name)


def _traces(mlflow, experiment_id: str, filter_string: str | None, limit: int) -> list:
    return mlflow.search_traces(locations=[experiment_id], filter_string=filter_string, max_results=limit,
                                return_type="list")


@review.command("add-traces")
@handle_errors
def add_traces(endpoint: str, session: str = typer.Option(..., "--session", help="Labeling session (made if missing)"),
               filter_string: str = FilterOption,
               limit: int = typer.Option(100, "--max", help="At most this many traces, newest first"),
               host: HostOption = None, home: HomeOption = None) -> None:
    """Send the endpoint's traces matching a filter to a labeling session's review queue."""
    client = connect(host, home)
    experiment_id = client.get_endpoint(endpoint)["experiment_id"]
    mlflow = _mlflow(client)
    traces = _traces(mlflow, experiment_id, filter_string, limit)
    labeling_session = _session(mlflow, experiment_id, session)
    if traces:
        labeling_session.add_traces(traces)
    console.print(f"Sent {len(traces)} trace(s) of {endpoint} to labeling session {session}: {labeling_session.url}",
                  highlight=False)


@review.command("add-rule")
@handle_errors
def add_rule(endpoint: str, name: str, session: str = typer.Option(..., "--session", help="Labeling session (made if "
                                                                                           "missing)"),
             filter_string: str = typer.Option(..., "--filter", help="An MLflow trace filter"),
             host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Send the endpoint's traces that match a filter to a labeling session as they appear."""
    client = connect(host, home)
    experiment_id = client.get_endpoint(endpoint)["experiment_id"]
    _session(_mlflow(client), experiment_id, session)
    rule = client.request("POST", f"/api/2.0/serving-endpoints/{endpoint}/review-rules",
                          json={"name": name, "filter_string": filter_string, "session": session})
    if as_json:
        print_json(rule)
        return
    console.print(f"Review rule {name} on {endpoint}: traces matching {filter_string!r} go to {session}.", highlight=False)


@review.command("rules")
@handle_errors
def rules(endpoint: str, host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List an endpoint's review rules and how many traces each has sent."""
    found = connect(host, home).request("GET", f"/api/2.0/serving-endpoints/{endpoint}/review-rules")["review_rules"]
    if as_json:
        print_json(found)
        return
    print_table(("rule", "filter", "session", "traces sent", "last error"),
                [(r["name"], r["filter_string"], r["session"], r["traces_added"], r.get("last_error", "-")) for r in found],
                empty=f"No review rules on {endpoint}.")


@review.command("delete-rule")
@handle_errors
def delete_rule(endpoint: str, name: str, host: HostOption = None, home: HomeOption = None) -> None:
    """Delete a review rule (the traces it sent stay in their session)."""
    connect(host, home).request("DELETE", f"/api/2.0/serving-endpoints/{endpoint}/review-rules/{name}")
    console.print(f"Deleted review rule {name} of {endpoint}.")


@datasets.command("add-from-traces")
@handle_errors
def add_from_traces(dataset: str = typer.Argument(..., help="The evaluation dataset (made if missing)"),
                    endpoint: str = typer.Option(..., "--endpoint", help="Whose traces"),
                    session: str = typer.Option(None, "--session", help="The traces of this labeling session"),
                    filter_string: str = FilterOption,
                    limit: int = typer.Option(1000, "--max", help="At most this many traces (with --filter)"),
                    host: HostOption = None, home: HomeOption = None) -> None:
    """Merge traces, with the expectations people labelled on them, into an evaluation dataset."""
    if (session is None) == (filter_string is None):
        fail("give --session or --filter")
    client = connect(host, home)
    experiment_id = client.get_endpoint(endpoint)["experiment_id"]
    mlflow = _mlflow(client)
    from mlflow.exceptions import MlflowException
    from mlflow.genai.datasets import create_dataset, get_dataset

    if session is not None:
        labeling_session = _session(mlflow, experiment_id, session, create=False)
        items = mlflow.MlflowClient()._tracing_client._list_review_queue_items(labeling_session.labeling_session_id,
                                                                              max_results=limit)
        traces = [mlflow.get_trace(item.item_id) for item in items]
    else:
        traces = _traces(mlflow, experiment_id, filter_string, limit)
    if not traces:
        console.print("No traces matched; nothing merged.")
        return
    try:
        target = get_dataset(name=dataset)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        target = create_dataset(name=dataset, experiment_id=[experiment_id])
    before = len(target.to_df())
    target.merge_records(traces)
    after = len(get_dataset(name=dataset).to_df())
    labelled = sum(1 for t in traces if any(a.expectation is not None for a in t.info.assessments or []))
    console.print(f"Merged {len(traces)} trace(s) ({labelled} with expectations) into {dataset}: {before} -> {after} "
                  "records.", highlight=False)
