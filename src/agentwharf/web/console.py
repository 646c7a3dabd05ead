"""The serving console: every endpoint the caller may see, and one endpoint's page (served
versions, traffic, workers and restarts, load errors for CAN_MANAGE, permissions, live charts,
the quality panel of production monitoring, a version's worker log tail for CAN_MANAGE).

    GET  /serving/                                               endpoints (CAN_VIEW each)
    GET  /serving/endpoints/{name}                               one endpoint (CAN_VIEW)
    GET  /serving/endpoints/{name}/metrics.json                  chart data (CAN_VIEW)
    GET  /serving/endpoints/{name}/quality.json                  quality chart data (CAN_VIEW)
    POST /serving/endpoints/{name}/permissions                   grant a level (CAN_MANAGE)
    GET  /serving/endpoints/{name}/versions/{entity}/logs[.txt]  worker log tail (CAN_MANAGE)
    POST /serving/endpoints/{name}/rollout/promote|abort         end its rollout (CAN_MANAGE)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from agentwharf.auth.levels import PermissionLevel
from agentwharf.control import access_routes
from agentwharf.errors import AgentwharfError, InvalidParameter, NotFound
from agentwharf.serving.routing import worker_key
from agentwharf.web import charts, quality_panel, rollout_panel, worker_logs
from agentwharf.web.context import base_url, caller_of, context_of
from agentwharf.web.render import page

#: Levels the permissions form offers, weakest first (NO_PERMISSIONS removes a grant).
GRANTABLE = [level.value for level in PermissionLevel]


def _health(view: dict) -> tuple[str, str]:
    """(css class, words) for an endpoint's overall state."""
    served = view.get("config", {}).get("served_entities", [])
    if any(e["state"]["deployment"] == "DEPLOYMENT_FAILED" for e in served) or view["state"]["config_update"] == "UPDATE_FAILED":
        return "failed", "Failed"
    if view["state"]["config_update"] == "IN_PROGRESS":
        return "updating", "Updating"
    if view["state"]["ready"] == "READY":
        return "ready", "Ready"
    return "not-ready", "Not ready"


def workers(context, endpoint: str, entity: str) -> list[dict[str, Any]]:
    """The worker processes of one served version, as the supervisor runs them now."""
    version = context.control.supervisor.versions.get(worker_key(endpoint, entity))
    if version is None:
        return []
    found = []
    for replica in version.replicas:
        process = replica.process
        running = process is not None and process.returncode is None
        connection = replica.connection
        found.append({"index": replica.index, "pid": process.pid if running else None, "running": running,
                      "connected": connection is not None and not connection.closed, "restarts": replica.restarts,
                      "in_flight": connection.in_flight if connection is not None else 0})
    return found


async def endpoint_list(request: Request) -> Response:
    context, caller = context_of(request), caller_of(request)
    url = base_url(request)
    rows = []
    for endpoint in context.control.endpoints.list(caller):
        view = context.control.view(endpoint, caller, url)
        health_class, health = _health(view)
        rows.append({"view": view, "health_class": health_class, "health": health,
                     "served": view.get("config", {}).get("served_entities", []),
                     "level": PermissionLevel(view["permission_level"])})
    failed = sum(1 for r in rows if r["health_class"] == "failed")
    return page(request, "console.html", title="Serving endpoints", rows=rows, failed=failed)


async def endpoint_page(request: Request, notice: str | None = None, error: AgentwharfError | None = None) -> Response:
    context, caller = context_of(request), caller_of(request)
    name = request.path_params["name"]
    endpoint = context.endpoint_for(caller, name, PermissionLevel.CAN_VIEW)
    view = context.control.view(endpoint, caller, base_url(request))
    level = PermissionLevel(view["permission_level"])
    traffic = {r["served_model_name"]: r["traffic_percentage"] for r in view.get("config", {}).get("traffic_config", {}).get("routes", [])}
    served = []
    for entity in view.get("config", {}).get("served_entities", []) + view.get("pending_config", {}).get("served_entities", []):
        served.append({**entity, "traffic": traffic.get(entity["name"], 0), "workers": workers(context, name, entity["name"]),
                       "pending": entity in view.get("pending_config", {}).get("served_entities", [])})
    grants = sorted(context.control.identities.endpoint_grants(name).items())
    principals = [p.name for p in context.control.identities.list_principals()] if level.allows(PermissionLevel.CAN_MANAGE) else []
    health_class, health = _health(view)
    status = error.http_status if error is not None else 200
    quality = await asyncio.to_thread(quality_panel.summary, context.control.db, name, endpoint.experiment_id,
                                      int(time.time() * 1000))
    rollout = await asyncio.to_thread(rollout_panel.latest, context.control, name, caller)
    return page(request, "endpoint.html", status=status, title=f"Endpoint {name}", view=view, level=level, served=served,
                quality=quality, rollout=rollout,
                grants=grants, principals=principals, grantable=GRANTABLE, health=health, health_class=health_class,
                can_manage=level.allows(PermissionLevel.CAN_MANAGE), can_query=level.allows(PermissionLevel.CAN_QUERY),
                can_review=level.allows(PermissionLevel.CAN_REVIEW), notice=notice or request.query_params.get("notice"),
                error=error.message if error is not None else None)


async def endpoint_metrics(request: Request) -> Response:
    context, caller = context_of(request), caller_of(request)
    endpoint = context.endpoint_for(caller, request.path_params["name"], PermissionLevel.CAN_VIEW)
    data = await asyncio.to_thread(charts.series, context.control.db, endpoint.name, int(time.time() * 1000))
    data["in_flight_now"] = charts.in_flight_now(context.control.supervisor, endpoint)
    return JSONResponse(data)


async def endpoint_quality(request: Request) -> Response:
    context, caller = context_of(request), caller_of(request)
    endpoint = context.endpoint_for(caller, request.path_params["name"], PermissionLevel.CAN_VIEW)
    data = await asyncio.to_thread(quality_panel.series, context.control.db, endpoint.name, endpoint.experiment_id,
                                   int(time.time() * 1000))
    return JSONResponse(data)


async def set_permission(request: Request) -> Response:
    context, caller = context_of(request), caller_of(request)
    name = request.path_params["name"]
    context.endpoint_for(caller, name, PermissionLevel.CAN_MANAGE)
    form = await request_form(request)
    principal, level = form.get("principal", "").strip(), form.get("level", "")
    try:
        if not principal:
            raise InvalidParameter("Name the user or service principal to grant a level to")
        # The REST route's own function: the same checks (CAN_MANAGE, personal token, the
        # principal exists) and the same effect (MLflow's experiment permission kept in step).
        await access_routes.update_endpoint_permissions(
            name, context.control, {"access_control_list": [{"user_name": principal, "permission_level": level}]}, caller)
    except AgentwharfError as failure:
        return await endpoint_page(request, error=failure)
    words = f"{principal}: {PermissionLevel.parse(level).value}"
    return RedirectResponse(f"/serving/endpoints/{name}?notice=Saved+{words.replace(' ', '+')}", status_code=303)


async def promote_rollout(request: Request) -> Response:
    return await _end_rollout(request, "promote", "Rollout promoted: all traffic to the candidate")


async def abort_rollout(request: Request) -> Response:
    return await _end_rollout(request, "abort", "Rollout aborted: all traffic back to the current version")


async def _end_rollout(request: Request, how: str, words: str) -> Response:
    context, caller = context_of(request), caller_of(request)
    name = request.path_params["name"]
    context.endpoint_for(caller, name, PermissionLevel.CAN_VIEW)
    try:
        # The REST routes' own calls: the same checks (CAN_MANAGE, a rollout in progress), the
        # same decision in the log ("aborted by <caller>").
        await getattr(context.control.rollouts, how)(name, caller)
    except AgentwharfError as failure:
        return await endpoint_page(request, error=failure)
    return RedirectResponse(f"/serving/endpoints/{name}?notice={quote_plus(words)}", status_code=303)


def _log_args(request: Request) -> tuple[str, str, int | None]:
    context, caller = context_of(request), caller_of(request)
    name, entity = request.path_params["name"], request.path_params["entity"]
    endpoint = context.endpoint_for(caller, name, PermissionLevel.CAN_MANAGE)
    if entity not in {e.name for e in endpoint.entities}:
        raise NotFound(f"Endpoint {name!r} serves no version named {entity!r}")
    raw = request.query_params.get("replica", "0")
    if raw == "build":
        return name, entity, None
    if not raw.isdigit():
        raise InvalidParameter(f"replica must be a worker number or 'build', got {raw!r}")
    return name, entity, int(raw)


async def log_page(request: Request) -> Response:
    name, entity, replica = _log_args(request)
    context = context_of(request)
    tail = await asyncio.to_thread(worker_logs.tail, context.logs_dir, name, entity, replica)
    return page(request, "logs.html", title=f"Worker log: {entity}", endpoint=name, entity=entity, replica=replica,
                tail=tail, replicas=[w["index"] for w in workers(context, name, entity)] or [0],
                has_build_log=worker_logs.has_build_log(context.logs_dir, name, entity))


async def log_text(request: Request) -> Response:
    name, entity, replica = _log_args(request)
    tail = await asyncio.to_thread(worker_logs.tail, context_of(request).logs_dir, name, entity, replica)
    return PlainTextResponse(tail, headers={"cache-control": "no-store"})


async def request_form(request: Request) -> dict[str, str]:
    """A url-encoded form (the pages' forms), first value of each field."""
    from urllib.parse import parse_qs

    body = await request.body()
    if len(body) > 1_000_000:
        raise InvalidParameter("The form is too large")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True).items()}
