"""REST of production monitoring (``agentwharf.quality``), what the serving console's charts and
``agentwharf alerts``/``agentwharf monitor`` read:

    GET    /api/2.0/serving-endpoints/{name}/monitoring?since=&until=&bucket=   CAN_VIEW: trends
    GET    /api/2.0/serving-endpoints/{name}/alerts                             CAN_VIEW
    POST   /api/2.0/serving-endpoints/{name}/alerts                             CAN_MANAGE (answer has the secret)
    DELETE /api/2.0/serving-endpoints/{name}/alerts/{alert}                     CAN_MANAGE
    GET    /api/2.0/serving-endpoints/{name}/alerts/{alert}/events              CAN_VIEW: firings, deliveries
    GET    /api/2.0/agentwharf/alerts                                            every alert the caller may view
    GET    /api/2.0/serving-endpoints/{name}/scorers/{scorer}/environment       CAN_REVIEW
    PUT    /api/2.0/serving-endpoints/{name}/scorers/{scorer}/environment       CAN_MANAGE {"environment": ...}
    GET    /api/2.0/serving-endpoints/{name}/review-rules                       CAN_REVIEW
    POST   /api/2.0/serving-endpoints/{name}/review-rules                       CAN_MANAGE {"name", "filter_string", "session"}
    DELETE /api/2.0/serving-endpoints/{name}/review-rules/{rule}                CAN_MANAGE

Scorers themselves are MLflow's (``Scorer.register/start``, see ``quality.guard``).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request

from agentwharf.auth.levels import PermissionLevel
from agentwharf.control.inference import parse_time
from agentwharf.control.routes import Body, CallerDep, Control, _require
from agentwharf.errors import InvalidParameter
from agentwharf.quality import alerts, review_rules, scorer_envs, trends

router = APIRouter()
_PREFIX = "/api/2.0/serving-endpoints/{name}"
#: Without ``since``: the last hour; without ``bucket``: about 60 points.
DEFAULT_SINCE_MS = 3_600_000


def _time(value: str | None, name: str, now_ms: int) -> int | None:
    """Epoch ms or ISO 8601 (as the inference table takes), or a duration back from now (``1h``)."""
    if value in (None, ""):
        return None
    if value[-1:].isalpha() and not value[:1].isalpha() and "-" not in value and ":" not in value:
        return now_ms - trends.parse_duration(value, name, 0)
    return parse_time(value, name)


def _who(caller) -> str | None:
    return caller.name if caller is not None else None


@router.get(_PREFIX + "/monitoring")
async def monitoring(name: str, control: Control, request: Request, caller: CallerDep) -> dict:
    """Per-bucket requests, error rate, latency percentiles, each online scorer's pass rate, mean
    and error rate, and people's feedback, for the endpoint and each served version."""
    endpoint = control.endpoints.get(name)
    _require(control, caller, name, PermissionLevel.CAN_VIEW)
    params = request.query_params
    now = int(time.time() * 1000)
    end = _time(params.get("until"), "until", now) or now
    start = _time(params.get("since"), "since", now) or end - DEFAULT_SINCE_MS
    if start >= end:
        raise InvalidParameter("since must be before until")
    bucket = trends.parse_duration(params.get("bucket"), "bucket", max(1000, (end - start) // 60))
    found = await asyncio.to_thread(trends.series, control.db, name, endpoint.experiment_id, start, end, bucket)
    return {"endpoint": name, **found}


@router.get(_PREFIX + "/alerts")
async def list_alerts(name: str, control: Control, caller: CallerDep) -> dict:
    control.endpoints.get(name)
    _require(control, caller, name, PermissionLevel.CAN_VIEW)
    return {"alerts": await asyncio.to_thread(alerts.list_rules, control.db, name)}


@router.post(_PREFIX + "/alerts")
async def create_alert(name: str, control: Control, body: Body, caller: CallerDep) -> dict:
    """A rule: ``name``, ``metric``, ``operator`` (``>``, ``>=``, ``<``, ``<=``), ``threshold``,
    ``window`` (``5m``), ``min_samples``, ``webhook_url``, optionally ``served_entity``. The
    answer carries the rule's signing ``secret``, shown this once."""
    control.endpoints.get(name)
    _require(control, caller, name, PermissionLevel.CAN_MANAGE)
    return await asyncio.to_thread(alerts.create, control.db, name, body, _who(caller))


@router.delete(_PREFIX + "/alerts/{alert}")
async def delete_alert(name: str, alert: str, control: Control, caller: CallerDep) -> dict:
    _require(control, caller, name, PermissionLevel.CAN_MANAGE)
    await asyncio.to_thread(alerts.delete, control.db, name, alert)
    return {}


@router.get(_PREFIX + "/alerts/{alert}/events")
async def alert_events(name: str, alert: str, control: Control, caller: CallerDep) -> dict:
    _require(control, caller, name, PermissionLevel.CAN_VIEW)
    return {"events": await asyncio.to_thread(alerts.events, control.db, name, alert)}


@router.get("/api/2.0/agentwharf/alerts")
async def all_alerts(control: Control, caller: CallerDep) -> dict:
    rules = await asyncio.to_thread(alerts.list_rules, control.db)
    return {"alerts": [r for r in rules if control.level_of(caller, r["endpoint"]).allows(PermissionLevel.CAN_VIEW)]}


@router.get(_PREFIX + "/scorers/{scorer}/environment")
async def get_scorer_environment(name: str, scorer: str, control: Control, caller: CallerDep) -> dict:
    endpoint = control.endpoints.get(name)
    _require(control, caller, name, PermissionLevel.CAN_REVIEW)
    return await asyncio.to_thread(scorer_envs.get, control.db, endpoint.experiment_id, scorer)


@router.put(_PREFIX + "/scorers/{scorer}/environment")
async def put_scorer_environment(name: str, scorer: str, control: Control, body: Body, caller: CallerDep) -> dict:
    """``{"environment": "platform" | "model" | "models:/NAME/VERSION"}`` (see ``quality.scorer_envs``)."""
    endpoint = control.endpoints.get(name)
    _require(control, caller, name, PermissionLevel.CAN_MANAGE)
    return await asyncio.to_thread(scorer_envs.put, control.db, endpoint.experiment_id, scorer, body.get("environment"),
                                   _who(caller))


@router.get(_PREFIX + "/review-rules")
async def list_review_rules(name: str, control: Control, caller: CallerDep) -> dict:
    control.endpoints.get(name)
    _require(control, caller, name, PermissionLevel.CAN_REVIEW)
    return {"review_rules": await asyncio.to_thread(review_rules.list_rules, control.db, name)}


@router.post(_PREFIX + "/review-rules")
async def create_review_rule(name: str, control: Control, body: Body, caller: CallerDep) -> dict:
    """Traces matching ``filter_string`` go to the labeling session ``session`` as they appear
    (see ``quality.review_rules``)."""
    endpoint = control.endpoints.get(name)
    _require(control, caller, name, PermissionLevel.CAN_MANAGE)
    return await asyncio.to_thread(review_rules.create, control.db, control.tracking_store(), name,
                                   endpoint.experiment_id, body, _who(caller))


@router.delete(_PREFIX + "/review-rules/{rule}")
async def delete_review_rule(name: str, rule: str, control: Control, caller: CallerDep) -> dict:
    _require(control, caller, name, PermissionLevel.CAN_MANAGE)
    await asyncio.to_thread(review_rules.delete, control.db, name, rule)
    return {}
