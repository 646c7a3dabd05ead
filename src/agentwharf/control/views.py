"""Endpoints and deployments as JSON, in the shapes Databricks' clients parse
(see shared/reference/databricks-clients.md): versions are strings, names as the clients build them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentwharf.auth.levels import PermissionLevel
from agentwharf.store.models import Endpoint, ServedEntity

#: Supervisor state -> (Databricks deployment state, message).
_DEPLOYMENT_STATES = {
    "READY": ("DEPLOYMENT_READY", ""),
    "BUILDING": ("DEPLOYMENT_CREATING", "Building the model's environment."),
    "STARTING": ("DEPLOYMENT_CREATING", "Starting the model worker and loading the model."),
    "RESTARTING": ("DEPLOYMENT_RECOVERING", "A worker crashed and is restarting."),
    "SCALED_TO_ZERO": ("DEPLOYMENT_READY", "Scaled to zero; starts again on the next request."),
    "STOPPED": ("DEPLOYMENT_ABORTED", "Not running."),
}

#: served entity key -> (supervisor state, its error (FAILED) or what it is doing now, or None)
StateLookup = Callable[[str, str], tuple[str, str | None]]

#: What a caller below CAN_MANAGE reads instead of a load error (a worker's log tail, which
#: may show paths, code and configuration).
_FAILED_FOR_OTHERS = "The model failed to load. Users with CAN_MANAGE on the endpoint see why."
_UPDATE_FAILED_FOR_OTHERS = "The last config update failed. Users with CAN_MANAGE on the endpoint see why."


def entity_config(entity: ServedEntity) -> dict[str, Any]:
    """A served entity as it appears in a config (and as a config update sends it back)."""
    if entity.external_model:
        # Databricks' shape; the key only as a reference (one given in plain text is in
        # MLflow's encrypted store, and a config sent back without a key keeps it).
        public = {k: v for k, v in entity.external_model.items() if k not in ("mlflow", "key_reference")}
        return {"name": entity.name, "external_model": public}
    return {
        "name": entity.name,
        "entity_name": entity.entity_name,
        "entity_version": entity.entity_version,
        "environment_vars": entity.environment_vars,
        "workload_size": entity.workload_size,
        "scale_to_zero_enabled": entity.scale_to_zero,
        **({"env_manager": entity.env_manager} if entity.env_manager else {}),
    }


def entity_view(endpoint: Endpoint, entity: ServedEntity, state_of: StateLookup,
                level: PermissionLevel = PermissionLevel.CAN_MANAGE) -> dict[str, Any]:
    if entity.external_model:
        return {**entity_config(entity), "creation_timestamp": entity.created_at,
                "state": {"deployment": "DEPLOYMENT_READY", "deployment_state_message": ""}}
    state, error = state_of(endpoint.name, entity.name)
    deployment, message = _DEPLOYMENT_STATES.get(state, ("DEPLOYMENT_FAILED", error or "Failed."))
    if state == "FAILED":
        manages = level.allows(PermissionLevel.CAN_MANAGE)
        deployment, message = "DEPLOYMENT_FAILED", (error if manages else None) or _FAILED_FOR_OTHERS
    elif state == "BUILDING" and error:
        message = f"Building the model's environment: {error}"
    return {
        **entity_config(entity),
        "creation_timestamp": entity.created_at,
        "state": {"deployment": deployment, "deployment_state_message": message},
    }


def _config_view(endpoint: Endpoint, entities: list[ServedEntity], routes: list, version: int, state_of: StateLookup,
                 level: PermissionLevel) -> dict[str, Any]:
    served = [entity_view(endpoint, e, state_of, level) for e in entities]
    return {
        "served_entities": served,
        "served_models": [
            {**s, "model_name": s["entity_name"], "model_version": s["entity_version"]} for s in served if "entity_name" in s
        ],
        "traffic_config": {"routes": routes},
        "config_version": version,
    }


def endpoint_view(endpoint: Endpoint, state_of: StateLookup, base_url: str,
                  level: PermissionLevel = PermissionLevel.CAN_MANAGE) -> dict[str, Any]:
    """The endpoint as ``level`` (the caller's) may see it: load errors only for CAN_MANAGE."""
    active = [e for e in endpoint.entities if not e.pending]
    view: dict[str, Any] = {
        "name": endpoint.name,
        "id": endpoint.id,
        "creator": endpoint.creator,
        "creation_timestamp": endpoint.created_at,
        "last_updated_timestamp": endpoint.updated_at,
        "description": endpoint.description or "",
        "tags": [{"key": k, "value": v} for k, v in sorted(endpoint.tags.items())],
        "task": endpoint.task or "agent/v1/responses",
        "route_optimized": False,
        "permission_level": level.value,
        "experiment_id": endpoint.experiment_id,
        "endpoint_url": f"{base_url}/serving-endpoints/{endpoint.name}/invocations",
        "state": {
            "ready": _readiness(endpoint, active, state_of),
            "config_update": endpoint.update_state,
        },
    }
    if endpoint.ai_gateway:
        view["ai_gateway"] = endpoint.ai_gateway
    if endpoint.update_message:
        manages = level.allows(PermissionLevel.CAN_MANAGE)
        view["state"]["config_update_message"] = endpoint.update_message if manages else _UPDATE_FAILED_FOR_OTHERS
    if active:
        view["config"] = _config_view(endpoint, active, endpoint.routes, endpoint.config_version, state_of, level)
    if endpoint.pending_routes is not None:
        pending_names = {r["served_model_name"] for r in endpoint.pending_routes}
        pending = [e for e in endpoint.entities if e.name in pending_names]
        view["pending_config"] = _config_view(endpoint, pending, endpoint.pending_routes, endpoint.config_version + 1,
                                              state_of, level)
    return view


def _readiness(endpoint: Endpoint, active: list[ServedEntity], state_of: StateLookup) -> str:
    if endpoint.task is not None:
        return "READY"  # answered by the gateway itself; its provider's health is the provider's
    live = {r["served_model_name"] for r in endpoint.routes if r["traffic_percentage"] > 0}
    states = [state_of(endpoint.name, e.name)[0] for e in active if e.name in live]
    return "READY" if states and all(s in ("READY", "SCALED_TO_ZERO") for s in states) else "NOT_READY"


def deployment_view(endpoint: Endpoint, entity: ServedEntity, base_url: str) -> dict[str, Any]:
    """An agent deployment: a served entity seen from the `agents` API."""
    return {
        "model_name": entity.entity_name,
        "model_version": entity.entity_version,
        "endpoint_name": endpoint.name,
        "served_entity_name": entity.name,
        "query_endpoint": f"{base_url}/serving-endpoints/{endpoint.name}/served-models/{entity.name}/invocations",
        "endpoint_url": f"{base_url}/serving-endpoints/{endpoint.name}/invocations",
        "workspace_url": base_url,
        # databricks-agents looks for "/review-v2/" and otherwise goes looking for a review app;
        # the URL is where Databricks' would be, and the platform's review app answers it (agentwharf.web.review).
        "review_app_url": f"{base_url}/ml/review-v2/chat?endpoint={endpoint.name}",
        "creation_timestamp": entity.created_at,
    }

