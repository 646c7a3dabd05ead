"""What a serving endpoint's managers read to see how it runs, in Databricks' paths and shapes
(``serving_endpoints.logs``, ``.build_logs`` and ``.export_metrics``):

    GET /api/2.0/serving-endpoints/{name}/served-models/{entity}/logs        CAN_MANAGE: {"logs"}
    GET /api/2.0/serving-endpoints/{name}/served-models/{entity}/build-logs  CAN_MANAGE: {"logs"}
    GET /api/2.0/serving-endpoints/{name}/metrics                            CAN_VIEW: Prometheus text

Logs are the worker processes' own (the model's prints and errors included), so only managers
read them, as only they see load errors in the endpoint's state.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from agentwharf.auth.caller import Caller
from agentwharf.auth.levels import PermissionLevel
from agentwharf.control.routes import CallerDep, Control, ControlState
from agentwharf.errors import NotFound, Unauthenticated
from agentwharf.serving import worker_logs
from agentwharf.serving.routing import worker_key

router = APIRouter()
_PREFIX = "/api/2.0/serving-endpoints/{name}"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _require(control: ControlState, caller: Caller | None, name: str, level: PermissionLevel) -> None:
    control.endpoints.get(name)  # 404 first: an unknown endpoint is not a permission question
    if caller is None:
        raise Unauthenticated("Authentication required")
    control.gatekeeper.require_endpoint(caller, name, level)


def _entity_logs(control: ControlState, name: str, entity: str, read) -> str:
    endpoint = control.endpoints.get(name)
    if entity not in {e.name for e in endpoint.entities}:
        raise NotFound(f"Endpoint {name!r} has no served model {entity!r}; "
                       f"it serves {', '.join(e.name for e in endpoint.entities) or 'none'}")
    paths = worker_logs.log_paths(control.supervisor.logs_dir, name, entity)
    if not paths:
        return ""  # not started yet
    return worker_logs.join([(i, read(path)) for i, path in enumerate(paths)])


@router.get(_PREFIX + "/served-models/{entity}/logs")
async def server_logs(name: str, entity: str, control: Control, caller: CallerDep) -> dict:
    """The current run of each of the version's worker processes (the last MiB of each)."""
    _require(control, caller, name, PermissionLevel.CAN_MANAGE)
    return {"logs": await asyncio.to_thread(_entity_logs, control, name, entity, worker_logs.server_log)}


@router.get(_PREFIX + "/served-models/{entity}/build-logs")
async def build_logs(name: str, entity: str, control: Control, caller: CallerDep) -> dict:
    """How the version's environment was built (or found built), then how the model was
    fetched and loaded, up to the moment its worker was ready."""
    _require(control, caller, name, PermissionLevel.CAN_MANAGE)
    loaded = await asyncio.to_thread(_entity_logs, control, name, entity, worker_logs.build_log)
    built = await asyncio.to_thread(worker_logs.tail, worker_logs.environment_log_path(control.supervisor.logs_dir, name, entity))
    return {"logs": built + loaded}


@router.get(_PREFIX + "/metrics")
def export_metrics(name: str, control: Control, caller: CallerDep) -> PlainTextResponse:
    _require(control, caller, name, PermissionLevel.CAN_VIEW)
    in_flight = concurrency = 0
    for entity in control.endpoints.get(name).entities:
        version = control.supervisor.versions.get(worker_key(name, entity.name))
        if version is None:
            continue
        connections = version.ready_connections()
        in_flight += sum(c.in_flight for c in connections)
        concurrency += len(connections) * control.worker_concurrency
    text = control.metrics.render(name, in_flight=in_flight, concurrency=concurrency)
    return PlainTextResponse(text, media_type=PROMETHEUS_TEXT)
