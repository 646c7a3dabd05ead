"""The request record: one trace plus what the inference table needs, built where the request
finished (the worker, or the gateway for requests that never reached one).

The trace's root span is the request itself; the agent's own spans (ResponsesAgent's automatic
span, ``@mlflow.trace``, autolog) are re-parented under it. Spans are in MLflow's stored form
(``Span.to_dict()``: base64 ids, JSON-encoded attribute values), so the writer stores them as
MLflow's own SQL store would and MLflow reads them back unchanged.

A record is bounded: each span attribute (inputs, outputs, anything an agent attached) and the
request and response kept for the inference table hold at most ``max_field_chars``; longer
values are cut (never dropped) and the trace's metadata says so (``agentwharf.truncated``).
``encode`` never fails: what JSON cannot hold (nesting deeper than the encoder allows) is kept
as text.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import orjson

from agentwharf.tracing import ids

SPAN_TYPE = "CHAIN"
#: Default bound of one span attribute, request or response in a record (characters).
DEFAULT_MAX_FIELD_CHARS = 1024 * 1024
TRUNCATED_KEY = "agentwharf.truncated"


def new_trace_ids() -> tuple[int, str]:
    """Ids for a trace the worker or gateway starts itself (time-ordered, ``tracing.ids``)."""
    return ids.new_trace_ids()


def _b64(value: int, size: int) -> str:
    return base64.b64encode(value.to_bytes(size, "big")).decode()


def _attr(value: Any) -> str:
    """An attribute value as MLflow stores it: JSON text (plain text when JSON cannot hold it)."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError as error:  # orjson.JSONEncodeError: nested deeper than orjson writes
        return orjson.dumps(_as_text(value, error)).decode()


def _as_text(value: Any, error: Exception) -> str:
    return f"[not storable as JSON ({error}); its text:] {repr(value)[:10_000]}"


def root_span(
    *, otel_trace_id: int, trace_id: str, span_id: int, name: str, start_ns: int, end_ns: int,
    inputs: Any, outputs: Any, error: str | None, attributes: dict[str, Any],
) -> dict[str, Any]:
    attrs = {
        "mlflow.traceRequestId": _attr(trace_id),
        "mlflow.spanType": _attr(SPAN_TYPE),
        "mlflow.spanInputs": _attr(inputs),
        "mlflow.spanOutputs": _attr(outputs),
        **{key: _attr(value) for key, value in attributes.items()},
    }
    events = []
    if error:
        events.append({"name": "exception", "time_unix_nano": end_ns,
                       "attributes": {"exception.message": error, "exception.type": "Error"}})
    return {
        "trace_id": _b64(otel_trace_id, 16),
        "span_id": _b64(span_id, 8),
        "parent_span_id": None,
        "name": name,
        "start_time_unix_nano": start_ns,
        "end_time_unix_nano": end_ns,
        "events": events,
        "status": {"code": "STATUS_CODE_ERROR" if error else "STATUS_CODE_OK", "message": error or ""},
        "attributes": attrs,
        "links": [],
    }


def child_span(*, otel_trace_id: int, trace_id: str, parent_b64: str, child: dict[str, Any], end_ns: int) -> dict[str, Any]:
    """A span the platform made itself under the request's root span (an LLM call, say).
    ``child``: name, span_type, start_ns, end_ns (default: now), inputs, outputs, attributes,
    error."""
    span = root_span(otel_trace_id=otel_trace_id, trace_id=trace_id, span_id=int.from_bytes(os.urandom(8), "big"),
                     name=child["name"], start_ns=child["start_ns"], end_ns=child.get("end_ns") or end_ns,
                     inputs=child.get("inputs"), outputs=child.get("outputs"), error=child.get("error"),
                     attributes=child.get("attributes") or {})
    span["attributes"]["mlflow.spanType"] = _attr(child.get("span_type", "UNKNOWN"))
    span["parent_span_id"] = parent_b64
    return span


def build(
    *, name: str, start_ns: int, inputs: Any, outputs: Any, error: str | None,
    agent_traces: list[Any] = (), attributes: dict[str, Any] | None = None,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS, children: list[dict[str, Any]] = (),
    metadata: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A record for one request. ``agent_traces`` are MLflow ``Trace`` objects the agent made;
    ``children`` spans the platform made itself (see ``child_span``); ``metadata`` goes into
    the trace's metadata; ``extra`` fields into the record (token ``usage``, for the row)."""
    end_ns = time.time_ns()
    agent_spans: list[dict[str, Any]] = []
    trace_metadata: dict[str, str] = {}
    if agent_traces:
        first = agent_traces[0]
        otel_trace_id = int(first.info.trace_id[3:], 16) if first.info.trace_id.startswith("tr-") else new_trace_ids()[0]
        trace_id = first.info.trace_id
        trace_metadata = {k: v for k, v in first.info.trace_metadata.items() if not k.startswith("mlflow.trace.size")}
    else:
        otel_trace_id, trace_id = new_trace_ids()
    span_id = int.from_bytes(os.urandom(8), "big")
    root = root_span(otel_trace_id=otel_trace_id, trace_id=trace_id, span_id=span_id, name=name, start_ns=start_ns,
                     end_ns=end_ns, inputs=inputs, outputs=outputs, error=error, attributes=attributes or {})
    root_b64 = root["span_id"]
    trace_b64 = root["trace_id"]
    for child in children:
        agent_spans.append(child_span(otel_trace_id=otel_trace_id, trace_id=trace_id, parent_b64=root["span_id"],
                                      child=child, end_ns=end_ns))
    for trace in agent_traces:
        for span in trace.data.spans:
            data = dict(span.to_dict())
            # One trace per request: spans of every agent trace join the request's trace.
            data["trace_id"] = trace_b64
            data["attributes"] = {**data["attributes"], "mlflow.traceRequestId": _attr(trace_id)}
            if data.get("parent_span_id") is None:
                data["parent_span_id"] = root_b64
            agent_spans.append(data)
    built = {
        "trace_id": trace_id,
        "start_ms": start_ns // 1_000_000,
        "duration_ms": max(0, (end_ns - start_ns) // 1_000_000),
        "state": "ERROR" if error else "OK",
        "spans": [root, *agent_spans],
        "metadata": {**trace_metadata, **(metadata or {})},
        "request": inputs,
        "response": outputs,
        "error": error,
        **(extra or {}),
    }
    _bound(built, max_field_chars)
    return built


def _cut(text: str, limit: int) -> str:
    return f"{text[:limit]}... [cut by agentwharf: {len(text)} characters in all]"


def _bound(built: dict[str, Any], limit: int) -> None:
    """Cut every span attribute, the request and the response to ``limit`` characters. The
    root span's inputs and outputs are the request and response as JSON text already, so
    their lengths cost nothing to know."""
    cut = []
    root = built["spans"][0]["attributes"]
    for field, key in (("request", "mlflow.spanInputs"), ("response", "mlflow.spanOutputs")):
        if len(root[key]) > limit:
            built[field] = _cut(root[key], limit)
            built[f"{field}_truncated"] = True
            cut.append(field)
    for span in built["spans"]:
        attributes = span["attributes"]
        for key, value in attributes.items():
            if isinstance(value, str) and len(value) > limit:
                # The stored value stays JSON (a string now), so MLflow still reads it back.
                attributes[key] = _attr(_cut(value, limit))
                cut.append(f"{span['name']}:{key}")
    if cut:
        built["metadata"][TRUNCATED_KEY] = ",".join(cut)[:1000]


def representable(value: Any) -> bool:
    """Whether ``value`` can be stored as JSON (orjson writes at most 254 levels of nesting)."""
    try:
        orjson.dumps(value, default=str)
    except TypeError:
        return False
    return True


def encode(built: dict[str, Any]) -> bytes:
    """The record as JSON bytes. Never fails: a request or response that JSON cannot hold as
    it is (too deeply nested) is kept as text; span attributes are text already."""
    try:
        return orjson.dumps(built, default=str)
    except TypeError as error:
        safe = {**built, "metadata": {**built["metadata"], TRUNCATED_KEY: "not storable as JSON"}}
        for field in ("request", "response"):
            if not representable(safe[field]):
                safe[field] = _as_text(safe[field], error)
        return orjson.dumps(safe, default=str)


_TRACE_ID_PREFIX = b'{"trace_id":"'


def trace_id_of(encoded: bytes) -> str | None:
    """The trace id of an encoded record, without decoding it all: ``build`` puts the id first,
    so the gateway finds it in a few bytes even when the record holds megabytes."""
    if encoded.startswith(_TRACE_ID_PREFIX):
        end = encoded.find(b'"', len(_TRACE_ID_PREFIX))
        if end > 0:
            return encoded[len(_TRACE_ID_PREFIX):end].decode()
    try:
        value = orjson.loads(encoded).get("trace_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None
