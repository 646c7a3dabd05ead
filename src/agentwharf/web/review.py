"""The review app, at the ``review_app_url`` deployments show, for domain experts:

    GET  /ml/review-v2/                               what the signed-in reviewer may review
    GET  /ml/review-v2/chat?endpoint={name}           instructions, a chat with feedback, sessions
                                                      (CAN_REVIEW on the endpoint)
    GET  /ml/review-v2/sessions/{queue_id}[?item=n]   a labeling session, one trace at a time
    POST /ml/review-v2/sessions/{queue_id}/items/{trace_id}   the reviewer's labels for one trace

A labeling session is MLflow's own custom review queue (``agentwharf.labeling`` creates them
for ``mlflow.genai.labeling``): its assigned users, its label schemas, its items (traces) and
their status are MLflow's, read and written as the reviewer, so MLflow decides who may open a
session (its assigned users, with EDIT on its experiment) and labels are MLflow assessments with
the reviewer as their ``HUMAN`` source.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mlflow.entities import AssessmentSource, Expectation, Feedback
from mlflow.genai.label_schemas import InputCategorical, InputNumeric, InputPassFail, InputText, LabelSchema
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from agentwharf.auth.caller import Caller
from agentwharf.auth.levels import PermissionLevel
from agentwharf.control import review_instructions
from agentwharf.errors import AgentwharfError, InvalidParameter
from agentwharf.web import mlflow_rest
from agentwharf.web.context import WebContext, caller_of, context_of
from agentwharf.web.conversation import conversation
from agentwharf.web.markdown import render_markdown
from agentwharf.web.playground import chat_targets
from agentwharf.web.render import page

PREFIX = "/ml/review-v2"
#: Experiments the labeling backend created sessions in carry this tag, so the review app can
#: find a reviewer's sessions outside the endpoints' own experiments.
SESSIONS_TAG = "agentwharf.labeling_sessions"
#: Label schemas whose text is a list, one entry a line (Databricks' built-in expectations).
LIST_SCHEMAS = ("expected_facts", "guidelines")


def _reviewable(context: WebContext, caller: Caller) -> list:
    return [e for e in context.control.endpoints.list(caller) if context.level(caller, e.name).allows(PermissionLevel.CAN_REVIEW)]


async def my_sessions(context: WebContext, caller: Caller, experiment_ids: list[str]) -> list[dict]:
    """Custom review queues (labeling sessions) the caller is assigned to, in these experiments."""
    found = []
    for experiment_id in dict.fromkeys(experiment_ids):
        try:
            queues = await mlflow_rest.list_queues(context.mlflow, caller, experiment_id, caller.name)
        except AgentwharfError:
            continue  # an experiment the caller may not read: none of its sessions are theirs
        for queue in queues:
            if queue.queue_type == "custom" and caller.name.strip().lower() in queue.users:
                items = await mlflow_rest.queue_items(context.mlflow, caller, queue.queue_id)
                done = sum(1 for i in items if i.status != "pending")
                found.append({"queue": queue, "items": len(items), "done": done})
    return found


async def _session_experiments(context: WebContext, caller: Caller, endpoints: list) -> list[str]:
    ids = [e.experiment_id for e in endpoints if e.experiment_id]
    try:
        tagged = await mlflow_rest.search_experiments(context.mlflow, caller, f"tags.`{SESSIONS_TAG}` = 'true'")
    except AgentwharfError:
        tagged = []
    return ids + [e["experiment_id"] for e in tagged]


async def home(request: Request) -> Response:
    context, caller = context_of(request), caller_of(request)
    endpoints = _reviewable(context, caller)
    sessions = await my_sessions(context, caller, await _session_experiments(context, caller, endpoints))
    return page(request, "review_home.html", title="Review app", endpoints=endpoints, sessions=sessions)


def _instructions(context: WebContext, endpoint) -> str:
    """The instructions of the model that takes the endpoint's traffic (the newest served)."""
    for entity in reversed(endpoint.entities):
        text = review_instructions.read(context.control.db, entity.entity_name)
        if text:
            return text
    return ""


async def chat(request: Request) -> Response:
    context, caller = context_of(request), caller_of(request)
    name = request.query_params.get("endpoint")
    if not name:
        raise InvalidParameter("Open the review app from a deployment's review_app_url, which names its endpoint "
                               "(?endpoint=...), or pick an endpoint on the review app's home page")
    endpoint = context.endpoint_for(caller, name, PermissionLevel.CAN_REVIEW)
    markdown = await asyncio.to_thread(_instructions, context, endpoint)
    sessions = await my_sessions(context, caller, [endpoint.experiment_id] if endpoint.experiment_id else [])
    return page(request, "review_chat.html", title=f"Review {endpoint.name}", endpoint=endpoint,
                instructions=render_markdown(markdown), targets=(await chat_targets(context, endpoint))[:1],
                sessions=sessions)


def widget(schema: LabelSchema) -> dict[str, Any]:
    """How a label schema is asked in the form."""
    spec = schema.input
    if isinstance(spec, InputPassFail):
        return {"kind": "choice", "options": [("true", spec.positive_label), ("false", spec.negative_label)], "multiple": False}
    if isinstance(spec, InputCategorical):
        return {"kind": "choice", "options": [(o, o) for o in spec.options], "multiple": spec.multi_select}
    if isinstance(spec, InputNumeric):
        return {"kind": "number", "min": spec.min_value, "max": spec.max_value}
    if isinstance(spec, InputText):
        return {"kind": "text", "max_length": spec.max_length, "list": schema.name in LIST_SCHEMAS}
    return {"kind": "text", "max_length": None, "list": False}


def parse_label(schema: LabelSchema, raw: list[str]) -> Any:
    """The assessment value of a schema from its form fields; None when left empty.

    Raises:
        InvalidParameter: a value the schema does not allow, naming the schema.
    """
    values = [v.strip() for v in raw if v.strip()]
    if not values:
        return None
    spec, title = schema.input, schema.name
    if isinstance(spec, InputPassFail):
        if values[0] not in ("true", "false"):
            raise InvalidParameter(f"{title}: choose {spec.positive_label} or {spec.negative_label}")
        return values[0] == "true"
    if isinstance(spec, InputCategorical):
        unknown = [v for v in values if v not in spec.options]
        if unknown:
            raise InvalidParameter(f"{title}: {unknown[0]!r} is not one of {', '.join(spec.options)}")
        return values if spec.multi_select else values[0]
    if isinstance(spec, InputNumeric):
        try:
            number = float(values[0])
        except ValueError:
            raise InvalidParameter(f"{title}: {values[0]!r} is not a number") from None
        if (spec.min_value is not None and number < spec.min_value) or (spec.max_value is not None and number > spec.max_value):
            raise InvalidParameter(f"{title}: {number:g} is outside {spec.min_value} .. {spec.max_value}")
        return int(number) if number.is_integer() else number
    text = values[0]
    if isinstance(spec, InputText) and spec.max_length is not None and len(text) > spec.max_length:
        raise InvalidParameter(f"{title}: at most {spec.max_length} characters")
    if schema.name in LIST_SCHEMAS:
        return [line.strip() for line in text.splitlines() if line.strip()]
    return text


def assessment(schema: LabelSchema, value: Any, comment: str | None, trace_id: str, reviewer: str):
    source = AssessmentSource(source_type="HUMAN", source_id=reviewer)
    if schema.type == "expectation":
        return Expectation(name=schema.name, value=value, source=source, trace_id=trace_id)
    return Feedback(name=schema.name, value=value, rationale=comment or None, source=source, trace_id=trace_id)


async def _session_state(context: WebContext, caller: Caller, queue_id: str) -> tuple:
    queue = await mlflow_rest.get_queue(context.mlflow, caller, queue_id)
    items = await mlflow_rest.queue_items(context.mlflow, caller, queue_id)
    schemas = [await mlflow_rest.get_schema(context.mlflow, caller, s) for s in queue.schema_ids]
    return queue, items, schemas


def _index(request: Request, items: list) -> int:
    raw = request.query_params.get("item")
    if raw is not None and raw.isdigit() and int(raw) < len(items):
        return int(raw)
    return next((n for n, i in enumerate(items) if i.status == "pending"), 0)


async def session_page(request: Request, error: AgentwharfError | None = None, form: dict | None = None) -> Response:
    context, caller = context_of(request), caller_of(request)
    queue_id = request.path_params["queue_id"]
    queue, items, schemas = await _session_state(context, caller, queue_id)
    index = _index(request, items)
    trace, turns, mine = None, [], {}
    if items:
        trace = await mlflow_rest.get_trace(context.mlflow, caller, items[index].item_id)
        turns = conversation(trace.data.request, trace.data.response)
        for a in sorted(trace.info.assessments or [], key=lambda a: a.create_time_ms or 0):
            if a.source and a.source.source_id == caller.name:
                mine[a.name] = (getattr(a, "value", None), getattr(a, "rationale", None))
    fields = [{"schema": s, "widget": widget(s), "current": mine.get(s.name, (None, None))} for s in schemas]
    done = sum(1 for i in items if i.status != "pending")
    return page(request, "session.html", status=error.http_status if error else 200, title=f"Labeling: {queue.name}",
                queue=queue, items=items, index=index, trace=trace, turns=turns, fields=fields, done=done,
                error=error.message if error else None, saved=request.query_params.get("saved"))


async def save_labels(request: Request) -> Response:
    context, caller = context_of(request), caller_of(request)
    queue_id, trace_id = request.path_params["queue_id"], request.path_params["trace_id"]
    queue, items, schemas = await _session_state(context, caller, queue_id)
    ids = [i.item_id for i in items]
    if trace_id not in ids:
        raise InvalidParameter(f"Trace {trace_id!r} is not an item of labeling session {queue.name!r}")
    index = ids.index(trace_id)
    fields = await _form_lists(request)
    if fields.get("action", [""])[0] != "skip":
        try:
            labels = [(s, parse_label(s, fields.get(f"value:{s.name}", []))) for s in schemas]
            labels = [(s, v) for s, v in labels if v is not None]
            if not labels:
                raise InvalidParameter("Give at least one label, or choose Skip")
        except InvalidParameter as problem:
            request.scope["query_string"] = f"item={index}".encode()
            return await session_page(request, error=problem)
        for schema, value in labels:
            comment = (fields.get(f"comment:{schema.name}") or [""])[0].strip()
            await mlflow_rest.log_assessment(context.mlflow, caller, assessment(schema, value, comment, trace_id, caller.name))
        await mlflow_rest.set_item_status(context.mlflow, caller, queue_id, trace_id, "complete")
    following = index + 1 if index + 1 < len(items) else index
    saved = "skip" if fields.get("action", [""])[0] == "skip" else "saved"
    return RedirectResponse(f"{PREFIX}/sessions/{queue_id}?item={following}&saved={saved}", status_code=303)


async def _form_lists(request: Request) -> dict[str, list[str]]:
    from urllib.parse import parse_qs

    body = await request.body()
    if len(body) > 1_000_000:
        raise InvalidParameter("The form is too large")
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
