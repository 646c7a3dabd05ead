"""Deploy registered agents to a running platform, with the guide's ``databricks.agents`` API.

    from agentwharf import agents

    deployment = agents.deploy("main.default.echo", "1")
    print(deployment.query_endpoint)

The platform is found at ``AGENTWHARF_HOST`` (default ``http://127.0.0.1:8710``); requests carry
``AGENTWHARF_TOKEN`` (default: the admin token a local platform wrote to ``.agentwharf/admin.token``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import quote

from agentwharf.auth.levels import PermissionLevel
from agentwharf.client import PlatformClient
from agentwharf.errors import NotFound
from agentwharf.rollouts import Gate, Rollout
from agentwharf.settings import ClientSettings

__all__ = ["Deployment", "Gate", "PermissionLevel", "Rollout", "abort_rollout", "delete_deployment", "deploy", "get_deployments",
           "get_permissions", "get_review_instructions", "get_rollout", "list_deployments", "promote_rollout",
           "set_permissions", "set_review_instructions"]

#: How long ``deploy`` waits for the new version to answer (building a model's environment
#: the first time can take minutes).
DEPLOY_TIMEOUT_SECONDS = 1800.0
#: Arguments of Databricks' ``databricks.agents.deploy`` that have no meaning on agentwharf:
#: accepted, so the guide's calls run unchanged, and logged as ignored.
_DATABRICKS_ONLY = ("instance_profile_arn", "budget_policy_id", "usage_policy_id", "deploy_feedback_model")
log = logging.getLogger("agentwharf.agents")


@dataclass(frozen=True)
class Deployment:
    """A model version served on an endpoint."""

    model_name: str
    model_version: str
    endpoint_name: str
    served_entity_name: str
    query_endpoint: str
    endpoint_url: str
    review_app_url: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        return cls(**{f.name: data.get(f.name, "") for f in fields(cls)})


def _client() -> PlatformClient:
    return PlatformClient(ClientSettings())


def deploy(
    model_name: str,
    model_version: str | int,
    scale_to_zero: bool = False,
    environment_vars: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    workload_size: str = "Small",
    endpoint_name: str | None = None,
    description: str | None = None,
    env_manager: str | None = None,
    rollout: Rollout | None = None,
    copy_scorers: bool | str = False,
    **databricks_only: Any,
) -> Deployment:
    """Serve a registered model version and wait until it answers.

    The first version of a model creates the endpoint ``agents_<catalog>-<schema>-<model>`` with
    that version at 100% of the traffic; a newer version takes 100% and older ones stay served
    at 0%, still reachable on their own ``served-models/<entity>/invocations`` route.

    Args:
        model_name: Registered model name ``catalog.schema.model``.
        model_version: The version to serve (``"3"`` or ``3``).
        scale_to_zero: Stop the version's workers when idle; the next request starts them.
        environment_vars: Extra environment for the worker: UPPERCASE keys, string values.
        tags: Tags added to the endpoint.
        workload_size: ``Small``, ``Medium`` or ``Large``: how many worker processes serve it.
        endpoint_name: Serve on this endpoint instead of the default name.
        description: The endpoint's description (a new endpoint's).
        env_manager: ``"uv"`` runs the version in an environment built from its model's logged
            requirements, ``"local"`` in the platform's own; default: the platform's setting.
        rollout: Let the version earn its traffic (``Rollout(canary_percent=10, gates=[...])``):
            it starts at the canary share beside the version serving now, and the platform
            steps it up while every gate holds or rolls it back when one fails. With
            ``Rollout(shadow_percent=100, gates=[...])`` it first answers only copies of live
            requests (never returned) and is promoted when its gates hold. ``deploy``
            returns once the version answers; follow the rollout with ``get_rollout``.
        **databricks_only: ``instance_profile_arn``, ``budget_policy_id``, ``usage_policy_id``,
            ``deploy_feedback_model``, accepted for Databricks' calls and ignored. Anything
            else is a ``TypeError``.
        copy_scorers: Monitor the endpoint with the development-time scorers (the guide's
            step 8): ``True`` registers and starts, on the endpoint's experiment, the scorers
            registered on the experiment of the run that logged this version; an experiment id
            names another source. Scorers the source runs online keep its sampling; the others
            score every trace. Needs CAN_MANAGE on the endpoint (as deploying does).

    Returns:
        The deployment, with ``query_endpoint`` (this version) and ``endpoint_url`` (the endpoint).

    Raises:
        AgentwharfError: invalid arguments, unknown model or version, version already served.
        DeploymentFailed: the model did not load, or its environment could not be built; the
            message carries the worker's log tail or the installer's own error.
        TypeError: an argument neither agentwharf nor Databricks' ``agents.deploy`` knows.
    """
    unknown = sorted(set(databricks_only) - set(_DATABRICKS_ONLY))
    if unknown:
        raise TypeError(f"deploy() got unexpected keyword arguments: {', '.join(unknown)}")
    if databricks_only:
        log.info("ignoring %s: Databricks-only deploy arguments with no effect on agentwharf", ", ".join(sorted(databricks_only)))
    client = _client()
    try:
        answer = client.deploy({
            "model_name": model_name,
            "model_version": str(model_version),
            "scale_to_zero": scale_to_zero,
            "environment_vars": environment_vars,
            "tags": tags,
            "workload_size": workload_size,
            "endpoint_name": endpoint_name,
            "description": description,
            "env_manager": env_manager,
            **({"rollout": rollout.to_json() if isinstance(rollout, Rollout) else rollout} if rollout is not None else {}),
        })
        deployment = Deployment.from_json(answer["deployed_chain"])
        log.info("deploying %s version %s to %s", model_name, model_version, deployment.endpoint_name)
        client.wait_for_entity(deployment.endpoint_name, deployment.served_entity_name, DEPLOY_TIMEOUT_SECONDS,
                               on_progress=_progress_logger(deployment.served_entity_name))
        log.info("%s answers on %s", deployment.served_entity_name, deployment.endpoint_name)
        if copy_scorers:
            from agentwharf.scorer_copy import copy_scorers as copy

            source = copy_scorers if isinstance(copy_scorers, str) else None
            copied = copy(client, deployment.endpoint_name, source, model=(model_name, str(model_version)))
            log.info("monitoring %s with %s", deployment.endpoint_name, ", ".join(c.name for c in copied) or "no scorers")
        return deployment
    finally:
        client.close()


def _progress_logger(entity: str):
    """Log each new step of a deploy once (the environment build, the model load)."""
    last = [""]

    def report(message: str, elapsed: float) -> None:
        if message and message != last[0]:
            last[0] = message
            log.info("%s: %s (%.0fs)", entity, message, elapsed)

    return report


def get_deployments(model_name: str, model_version: str | int | None = None) -> list[Deployment]:
    """Every deployment of a model, or of one version of it."""
    client = _client()
    try:
        version = None if model_version is None else str(model_version)
        return [Deployment.from_json(d) for d in client.get_deployments(model_name, version)]
    finally:
        client.close()


def list_deployments() -> list[Deployment]:
    """Every agent deployment on the platform."""
    client = _client()
    try:
        return [Deployment.from_json(d) for d in client.list_deployments()]
    finally:
        client.close()


def delete_deployment(model_name: str, model_version: str | int | None = None) -> None:
    """Stop serving one version (100% of traffic goes to the highest version left) or, without
    a version, every version of the model. Deleting the last version deletes the endpoint."""
    client = _client()
    try:
        client.delete_deployment(model_name, None if model_version is None else str(model_version))
    finally:
        client.close()


def _endpoints_of(client: PlatformClient, model_name: str) -> list[str]:
    endpoints = sorted({d["endpoint_name"] for d in client.get_deployments(model_name)})
    if not endpoints:
        raise NotFound(f"No deployment of {model_name} exists; deploy it first")
    return endpoints


def set_permissions(model_name: str, users: list[str], permission_level: PermissionLevel) -> None:
    """Give ``users`` (names of users, service principals or groups) ``permission_level`` on
    every endpoint serving ``model_name``. ``PermissionLevel.NO_PERMISSIONS`` removes their
    grants. Needs CAN_MANAGE on those endpoints."""
    level = PermissionLevel.parse(getattr(permission_level, "value", permission_level))
    if isinstance(users, str):
        users = [users]
    # group_name is the key the platform resolves to a group, or else to the user or service
    # principal of that name (what databricks-agents relies on too), so one key fits every name.
    acl = {"access_control_list": [{"group_name": user, "permission_level": level.value} for user in users]}
    with _client() as client:
        for endpoint in _endpoints_of(client, model_name):
            client.request("PATCH", f"/api/2.0/permissions/serving-endpoints/{endpoint}", json=acl)


def get_permissions(model_name: str) -> dict[str, dict[str, PermissionLevel]]:
    """Who holds which level on each endpoint serving ``model_name``: {endpoint: {name: level}}
    (groups included; ``admins`` always manages)."""
    answer = {}
    with _client() as client:
        for endpoint in _endpoints_of(client, model_name):
            acl = client.request("GET", f"/api/2.0/permissions/serving-endpoints/{endpoint}")["access_control_list"]
            answer[endpoint] = {(e.get("user_name") or e.get("service_principal_name") or e.get("group_name")):
                                PermissionLevel(e["all_permissions"][0]["permission_level"]) for e in acl}
    return answer


def set_review_instructions(model_name: str, instructions: str) -> None:
    """Set the Markdown its reviewers read first in the review app (``review_app_url``), as
    ``databricks.agents.set_review_instructions`` does. Needs CAN_MANAGE on an endpoint serving
    the model."""
    with _client() as client:
        client.request("PUT", f"/api/2.0/agents/review-instructions/{quote(model_name, safe='')}",
                       json={"instructions": instructions})


def get_review_instructions(model_name: str) -> str:
    """The review instructions of a deployed model ('' when none were set)."""
    with _client() as client:
        return client.request("GET", f"/api/2.0/agents/review-instructions/{quote(model_name, safe='')}")["instructions"]


def get_rollout(endpoint_name: str) -> dict[str, Any]:
    """The endpoint's latest rollout: ``state`` (RUNNING, PROMOTED, ROLLED_BACK, ABORTED), the
    candidate's ``traffic_percentage``, the current ``window`` (each gate's verdict with both
    versions' figures) and every ``decisions`` entry with its reason."""
    with _client() as client:
        return client.request("GET", f"/api/2.0/serving-endpoints/{endpoint_name}/rollout")


def promote_rollout(endpoint_name: str) -> dict[str, Any]:
    """Give the running rollout's candidate all the traffic now. Needs CAN_MANAGE."""
    with _client() as client:
        return client.request("POST", f"/api/2.0/serving-endpoints/{endpoint_name}/rollout/promote")


def abort_rollout(endpoint_name: str) -> dict[str, Any]:
    """Send all traffic back to the version serving before the rollout. Needs CAN_MANAGE."""
    with _client() as client:
        return client.request("POST", f"/api/2.0/serving-endpoints/{endpoint_name}/rollout/abort")
