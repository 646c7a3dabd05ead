"""The playground: chat with an endpoint, or one of its versions, in the browser.

    GET  /serving/endpoints/{name}/playground                  the page (CAN_QUERY)
    GET  /serving/api/endpoints/{name}/requests/{request_id}   an answer's trace, latency, tokens
    POST /serving/api/endpoints/{name}/feedback                thumbs up/down on an answer's trace

The page's script queries the endpoint's own gateway routes (``invocations``, or a version's
``served-models/{entity}/invocations``) with ``"stream": true`` and the browser's cookie, as any
client would: the request is authorized, traced and recorded like every other.

Feedback is what ``mlflow.log_feedback`` logs (the ``Feedback`` entity, name ``user_feedback``,
a bool, the comment as its rationale), with the signed-in user as its ``HUMAN`` source. A user
may give it on an answer they asked for (CAN_QUERY), or on any of the endpoint's traces
(CAN_REVIEW); the platform checks that against the inference table and writes the assessment.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from mlflow.entities import AssessmentSource, Feedback
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentwharf.auth.caller import Caller
from agentwharf.auth.levels import PermissionLevel
from agentwharf.errors import AgentwharfError, InvalidParameter, NotFound
from agentwharf.store.models import InferenceLog
from agentwharf.web import mlflow_rest
from agentwharf.web.context import WebContext, caller_of, context_of
from agentwharf.web.render import page
from agentwharf.web.shapes import SHAPES, shape_of

FEEDBACK_NAME = "user_feedback"
#: How long the answer's record may take to be stored (the spool writer batches every ~second).
ROW_WAIT_SECONDS = 20.0


async def chat_targets(context: WebContext, endpoint) -> list[dict]:
    """What the chat can talk to: the endpoint (its traffic split) and each served version."""
    targets = [{"label": f"{endpoint.name} (traffic split)", "path": f"/serving-endpoints/{endpoint.name}/invocations",
                "shape": None}]
    for entity in endpoint.entities:
        shape = await shape_of(context, entity.entity_name, entity.entity_version)
        targets.append({"label": f"{entity.name} (version {entity.entity_version})", "shape": shape,
                        "path": f"/serving-endpoints/{endpoint.name}/served-models/{entity.name}/invocations"})
    live = [t["shape"] for t in targets[1:]]
    targets[0]["shape"] = live[-1] if live else "responses"
    return targets


async def playground_page(request: Request) -> Response:
    context, caller = context_of(request), caller_of(request)
    endpoint = context.endpoint_for(caller, request.path_params["name"], PermissionLevel.CAN_QUERY)
    targets = await chat_targets(context, endpoint)
    return page(request, "playground.html", title=f"Playground: {endpoint.name}", endpoint=endpoint, targets=targets,
                shapes=SHAPES)


def _row(context: WebContext, endpoint: str, **where) -> InferenceLog | None:
    with context.control.db.session() as session:
        query = select(InferenceLog).where(InferenceLog.endpoint == endpoint)
        for column, value in where.items():
            query = query.where(getattr(InferenceLog, column) == value)
        return session.scalars(query.limit(1)).first()


async def _wait_row(context: WebContext, endpoint: str, **where) -> InferenceLog | None:
    deadline = time.monotonic() + ROW_WAIT_SECONDS
    while True:
        row = await asyncio.to_thread(_row, context, endpoint, **where)
        if row is not None or time.monotonic() > deadline:
            return row
        await asyncio.sleep(0.25)


def _may_see(context: WebContext, caller: Caller, row: InferenceLog) -> bool:
    own = row.caller == caller.name
    return own or context.level(caller, row.endpoint).allows(PermissionLevel.CAN_REVIEW)


def trace_url(experiment_id: str | None, trace_id: str) -> str:
    """The trace in MLflow's UI, at the platform's base URL."""
    return f"/#/experiments/{experiment_id}/traces?selectedEvaluationId={trace_id}"


async def request_info(request: Request) -> Response:
    context, caller = context_of(request), caller_of(request)
    endpoint = context.endpoint_for(caller, request.path_params["name"], PermissionLevel.CAN_QUERY)
    row = await _wait_row(context, endpoint.name, request_id=request.path_params["request_id"])
    if row is None or not _may_see(context, caller, row):
        raise NotFound("No recorded request with that id on this endpoint (it may still be being written; retry)")
    tokens = None
    if row.trace_id:
        try:
            tokens = await _token_usage(context, row.trace_id)
        except (AgentwharfError, orjson.JSONDecodeError):
            tokens = None
    return JSONResponse({"request_id": row.request_id, "trace_id": row.trace_id, "status_code": row.status_code,
                         "latency_ms": row.latency_ms, "served_entity": row.served_entity, "tokens": tokens,
                         "trace_url": trace_url(endpoint.experiment_id, row.trace_id) if row.trace_id else None})


async def _token_usage(context: WebContext, trace_id: str) -> dict | None:
    """MLflow's ``mlflow.trace.tokenUsage`` when the trace has it, else the sum of its LLM
    spans' ``mlflow.chat.tokenUsage`` (what MLflow's own exporter would have added up)."""
    usage = (await mlflow_rest.trace_metadata(context.mlflow, None, trace_id)).get("mlflow.trace.tokenUsage")
    if usage:
        return orjson.loads(usage)
    trace = await mlflow_rest.get_trace(context.mlflow, None, trace_id)
    total: dict[str, int] = {}
    for span in trace.data.spans:
        found = span.get_attribute("mlflow.chat.tokenUsage")
        if isinstance(found, dict):
            for key in ("input_tokens", "output_tokens", "total_tokens"):
                total[key] = total.get(key, 0) + int(found.get(key) or 0)
    return total or None


async def _json(request: Request) -> dict:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as error:
        raise InvalidParameter(f"Malformed JSON in request body: {error}") from None
    if not isinstance(body, dict):
        raise InvalidParameter("Request body must be a JSON object")
    return body


async def feedback(request: Request) -> Response:
    context, caller = context_of(request), caller_of(request)
    endpoint = context.endpoint_for(caller, request.path_params["name"], PermissionLevel.CAN_QUERY)
    body = await _json(request)
    trace_id, value, comment = body.get("trace_id"), body.get("value"), body.get("comment") or None
    if not isinstance(trace_id, str) or not trace_id:
        raise InvalidParameter("'trace_id' is required")
    if not isinstance(value, bool):
        raise InvalidParameter("'value' must be true (thumbs up) or false (thumbs down)")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 10_000):
        raise InvalidParameter("'comment' must be text of at most 10,000 characters")
    row = await _wait_row(context, endpoint.name, trace_id=trace_id)
    if row is None or not _may_see(context, caller, row):
        raise NotFound(f"No trace {trace_id!r} of an answer you may give feedback on, on endpoint {endpoint.name!r}")
    assessment = Feedback(name=FEEDBACK_NAME, value=value, rationale=comment, trace_id=trace_id,
                          source=AssessmentSource(source_type="HUMAN", source_id=caller.name))
    # Written by the platform, after the check above: a CAN_QUERY user has no MLflow permission
    # on the endpoint's experiment, yet may rate the answers they were given.
    stored = await mlflow_rest.log_assessment(context.mlflow, None, assessment)
    return JSONResponse({"assessment_id": stored.get("assessment", {}).get("assessment_id"), "trace_id": trace_id,
                         "value": value, "source_id": caller.name})
