"""Run inside the databricks-agents venv: the guide's step 7, as written for Databricks, one phase
per invocation (the test queries the endpoint and checks the platform between phases).

Each phase's first lines are the guide's code unchanged; the client finds the platform through
DATABRICKS_HOST, DATABRICKS_TOKEN and MLFLOW_TRACKING_URI=databricks, as users set them. What the
phase saw is printed last, as one JSON object.

    deploy              log, register in "Unity Catalog", agents.deploy
    redeploy            the same again: a new version on the existing endpoint (with tags, description)
    permissions         list/get deployments, set_permissions CAN_QUERY for alice, get_permissions
    revoke              set_permissions NO_PERMISSIONS for alice, get_permissions
    group NAME [LEVEL]  set_permissions for a name without "@" (sent as a group), get_permissions
    delete VERSION      delete_deployment of that version
    adopt MODEL         list/get a deployment made with agentwharf.agents, then delete it
    refused             calls agentwharf does not serve, with what the client raised

    --phases            the phases named on stdin, one per line, in this one process (as a
                        notebook's cells): what each saw on a line starting "PHASE RESULT "
"""

import json
import sys


def _deployment(d) -> dict:
    return {k: getattr(d, k) for k in ("model_name", "model_version", "endpoint_name", "served_entity_name",
                                       "query_endpoint", "endpoint_url", "review_app_url")}


def _levels(pairs) -> dict:
    return {user: level.name for user, level in pairs}


def deploy() -> dict:
    import mlflow
    mlflow.set_registry_uri("databricks-uc")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="agent", python_model="agent.py", pip_requirements=["mlflow"], registered_model_name="main.default.echo")
    from databricks import agents
    deployment = agents.deploy("main.default.echo", info.registered_model_version)
    print(deployment.query_endpoint)

    run = mlflow.get_run(info.run_id)
    return {"deployment": _deployment(deployment), "version": info.registered_model_version, "run_id": info.run_id,
            "model_id": info.model_id, "model_uri": info.model_uri, "run_artifact_uri": run.info.artifact_uri,
            "experiment_id": run.info.experiment_id,
            "experiment_artifact_location": mlflow.get_experiment(run.info.experiment_id).artifact_location,
            # The version's files as the databricks-uc registry lists them (Files API directories).
            "model_files": sorted(f.path for f in mlflow.artifacts.list_artifacts(
                artifact_uri=f"models:/main.default.echo/{info.registered_model_version}"))}


def redeploy() -> dict:
    """Step 7 again: a new version onto the existing endpoint, with tags and a description."""
    import mlflow
    mlflow.set_registry_uri("databricks-uc")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="agent", python_model="agent.py", pip_requirements=["mlflow"], registered_model_name="main.default.echo")
    from databricks import agents
    deployment = agents.deploy("main.default.echo", info.registered_model_version, tags={"team": "agents"}, description="the guide's echo agent")
    return {"deployment": _deployment(deployment), "version": info.registered_model_version}


def permissions() -> dict:
    from databricks import agents
    listed = agents.list_deployments()
    got = agents.get_deployments("main.default.echo")
    agents.set_permissions(model_name="main.default.echo", users=["alice"], permission_level=agents.PermissionLevel.CAN_QUERY)
    levels = agents.get_permissions("main.default.echo")
    return {"listed": [_deployment(d) for d in listed], "got": [_deployment(d) for d in got], "levels": _levels(levels)}


def revoke() -> dict:
    from databricks import agents
    agents.set_permissions(model_name="main.default.echo", users=["alice"], permission_level=agents.PermissionLevel.NO_PERMISSIONS)
    return {"levels": _levels(agents.get_permissions("main.default.echo"))}


def group(name: str, level: str = "CAN_QUERY") -> dict:
    """set_permissions with a name without "@": databricks-agents sends it as a group."""
    from databricks import agents
    agents.set_permissions(model_name="main.default.echo", users=[name], permission_level=agents.PermissionLevel[level])
    return {"levels": _levels(agents.get_permissions("main.default.echo"))}


def delete(version: str) -> dict:
    from databricks import agents
    agents.delete_deployment(model_name="main.default.echo", model_version=version)
    return {"left": [_deployment(d) for d in agents.get_deployments("main.default.echo")]}


def adopt(model: str) -> dict:
    from databricks import agents
    listed = [d.model_name for d in agents.list_deployments()]
    got = [_deployment(d) for d in agents.get_deployments(model)]
    agents.delete_deployment(model_name=model)
    return {"listed": listed, "got": got, "left": [_deployment(d) for d in agents.get_deployments(model)]}


def refused() -> dict:
    from databricks.sdk import WorkspaceClient

    w = WorkspaceClient()
    seen = {}
    for name, call in {"table": lambda: w.tables.get("main.default.some_table"),
                       "apps": lambda: list(w.apps.list())}.items():
        try:
            call()
            seen[name] = "no error"
        except Exception as error:  # the SDK's DatabricksError subclasses carry the server's code
            seen[name] = {"type": type(error).__name__, "error_code": getattr(error, "error_code", None), "message": str(error)}
    return seen


PHASES = {"deploy": deploy, "redeploy": redeploy, "permissions": permissions, "revoke": revoke, "delete": delete,
          "group": group, "adopt": adopt, "refused": refused}
#: Starts the line that carries a phase's result in ``--phases`` mode (the guide's code prints too).
RESULT = "PHASE RESULT "


def run_phases() -> None:
    """One phase per line of stdin, as a notebook runs its cells one after another in one
    Python: each answered by a line starting ``RESULT``, with what it saw or its traceback."""
    import traceback

    for line in sys.stdin:
        phase, *args = line.split()
        try:
            seen = PHASES[phase](*args)
        except Exception:
            seen = {"phase_failed": traceback.format_exc()}
        print("\n" + RESULT + json.dumps(seen), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--phases"]:
        run_phases()
    else:
        print(json.dumps(PHASES[sys.argv[1]](*sys.argv[2:])))
