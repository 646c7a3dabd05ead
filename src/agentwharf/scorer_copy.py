"""Carry the scorers of a model's development experiment to its serving endpoint's experiment,
so production is monitored by the same scorers (the guide's step 8).

A client of the platform like any other, with the caller's own token: MLflow reads the source
experiment's scorers (its permissions decide), the platform registers and starts them on the
endpoint's experiment (CAN_MANAGE on the endpoint, ``quality.guard``). Used by
``agentwharf monitor copy-scorers`` and ``agents.deploy(..., copy_scorers=True)``.

The source is, unless named, the experiment of the run that logged the endpoint's newest served
model version. Each scorer's latest version is registered under the same name (a new version
where the endpoint has it already); it is started with the source's sampling where the source
had one, with ``sample_rate`` (and ``filter_string``) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentwharf.client import PlatformClient
from agentwharf.errors import InvalidParameter, NotFound

_SCORERS = "/api/3.0/mlflow/scorers"


@dataclass(frozen=True)
class Copied:
    name: str
    version: int
    sample_rate: float
    filter_string: str | None


def development_experiment(client: PlatformClient, endpoint: dict, model: tuple[str, str] | None = None) -> str:
    """The experiment of the run that logged ``model`` (name, version), by default the
    endpoint's newest served model version.

    Raises:
        NotFound: the endpoint serves no registered model version, or it has no run.
    """
    if model is None:
        entities = [e for e in endpoint.get("config", {}).get("served_entities", []) if e.get("entity_name")]
        if not entities:
            raise NotFound(f"Endpoint {endpoint['name']!r} serves no registered model version; name the experiment")
        newest = max(entities, key=lambda e: int(e.get("entity_version") or 0))
        model = (newest["entity_name"], str(newest["entity_version"]))
    version = client.request("GET", "/api/2.0/mlflow/model-versions/get",
                             params={"name": model[0], "version": model[1]})["model_version"]
    run_id = version.get("run_id")
    if not run_id:
        raise NotFound(f"{model[0]} version {model[1]} was not logged by a run; name the experiment")
    return client.request("GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id})["run"]["info"]["experiment_id"]


def copy_scorers(client: PlatformClient, endpoint_name: str, from_experiment_id: str | None = None,
                 names: list[str] | None = None, sample_rate: float = 1.0, filter_string: str | None = None,
                 model: tuple[str, str] | None = None) -> list[Copied]:
    """Register and start the source experiment's scorers on the endpoint's experiment.

    Raises:
        NotFound: the endpoint, the source, or a named scorer does not exist.
        InvalidParameter: the source is the endpoint's own experiment.
        PermissionDenied: the caller may not read the source or manage the endpoint.
    """
    endpoint = client.get_endpoint(endpoint_name)
    target = endpoint["experiment_id"]
    source = from_experiment_id or development_experiment(client, endpoint, model)
    if str(source) == str(target):
        raise InvalidParameter(f"Experiment {source} is the endpoint's own; name the development experiment")
    listed = client.request("GET", f"{_SCORERS}/list", params={"experiment_id": source}).get("scorers", [])
    if names:
        missing = sorted(set(names) - {s["scorer_name"] for s in listed})
        if missing:
            raise NotFound(f"Experiment {source} has no scorer named {', '.join(missing)}")
        listed = [s for s in listed if s["scorer_name"] in names]
    configs = _online_configs(client, [s["scorer_id"] for s in listed])
    copied = []
    for scorer in listed:
        registered = client.request("POST", f"{_SCORERS}/register", json={
            "experiment_id": target, "name": scorer["scorer_name"], "serialized_scorer": scorer["serialized_scorer"]})
        config = configs.get(scorer["scorer_id"])
        rate, where = (config["sample_rate"], config.get("filter_string")) if config and config["sample_rate"] > 0 \
            else (sample_rate, filter_string)
        client.request("PUT", f"{_SCORERS}/online-config", json={
            "experiment_id": target, "name": scorer["scorer_name"], "sample_rate": rate,
            **({"filter_string": where} if where else {})})
        copied.append(Copied(scorer["scorer_name"], int(registered.get("version", 0)), float(rate), where))
    return copied


def _online_configs(client: PlatformClient, scorer_ids: list[str]) -> dict[str, dict]:
    if not scorer_ids:
        return {}
    found = client.request("GET", f"{_SCORERS}/online-configs", params=[("scorer_ids", i) for i in scorer_ids])
    return {c["scorer_id"]: c for c in found.get("configs", [])}
