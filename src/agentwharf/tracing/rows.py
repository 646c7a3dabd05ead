"""Spooled records as database rows: MLflow's trace tables and agentwharf's inference table.

The trace rows are what MLflow's SQL store writes for a trace whose spans live in the tracking
store (``mlflow.trace.spansLocation = TRACKING_STORE``): one ``trace_info`` row, its tags and
request metadata, and one ``spans`` row per span holding ``Span.to_dict()`` as JSON, which is
what MLflow's ``get_trace`` and ``search_traces`` read back. The column set is MLflow 3.17's
(pinned in pyproject); ``tests/integration/test_tracing.py`` reads every trace back through
MLflow's own client, so a schema change fails a test instead of corrupting data.
"""

from __future__ import annotations

import binascii
from typing import Any

import orjson

PREVIEW_CHARS = 1000
#: Trace metadata of a shadow copy's trace: the trace id of the live request it copied.
SHADOW_OF_KEY = "agentwharf.shadow_of"
_SPAN_STATUS = {"STATUS_CODE_OK": "OK", "STATUS_CODE_ERROR": "ERROR", "STATUS_CODE_UNSET": "UNSET"}


def _hex(b64: str | None) -> str | None:
    # binascii directly: base64.b64decode's argument checks cost more than the decoding.
    return None if b64 is None else binascii.a2b_base64(b64).hex()


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def _attr(span: dict, key: str) -> Any:
    raw = span["attributes"].get(key)
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def trace_rows(header: dict, record: dict, artifact_location: str | None) -> dict[str, list[dict]]:
    trace_id = record["trace_id"]
    experiment_id = int(header["experiment_id"])
    request_text = _json_text(record.get("request"))
    response_text = _json_text(record.get("response") if record.get("error") is None else {"error": record["error"]})
    context = record.get("request", {}).get("context") if isinstance(record.get("request"), dict) else None
    # Each metadata key is a row with two index entries in MLflow's schema; empty values (the
    # worker has no git checkout, no caller before auth) and the previews, which trace_info
    # holds in columns, would only add write cost.
    metadata = {
        **{k: v for k, v in record.get("metadata", {}).items() if v not in ("", None)},
        "mlflow.trace_schema.version": "3",
        "agentwharf.request_id": header["request_id"],
        "agentwharf.endpoint": header["endpoint"],
        "agentwharf.served_entity": header.get("entity") or "",
        "agentwharf.model_name": header.get("model_name") or "",
        "agentwharf.model_version": header.get("model_version") or "",
        "agentwharf.status_code": str(header["status_code"]),
    }
    if header.get("caller"):
        metadata["agentwharf.caller"] = header["caller"]
    if header.get("client_request_id"):
        metadata["agentwharf.client_request_id"] = header["client_request_id"]
    if header.get("shadow_of"):
        # A shadow copy's trace points at the live request's, so the two are compared side by side.
        metadata[SHADOW_OF_KEY] = header["shadow_of"]
    if isinstance(context, dict):
        if context.get("conversation_id"):
            metadata["mlflow.trace.session"] = str(context["conversation_id"])
        if context.get("user_id"):
            metadata["mlflow.trace.user"] = str(context["user_id"])
    tags = {"mlflow.trace.spansLocation": "TRACKING_STORE", "mlflow.traceName": header["endpoint"]}
    if artifact_location:
        tags["mlflow.artifactLocation"] = f"{artifact_location.rstrip('/')}/traces/{trace_id}/artifacts"
    info = {
        "request_id": trace_id,
        "experiment_id": experiment_id,
        "timestamp_ms": record["start_ms"],
        "execution_time_ms": record["duration_ms"],
        "status": record["state"],
        # MLflow's column for the caller's own id (the platform's when the caller sent none).
        "client_request_id": (header.get("client_request_id") or header["request_id"])[:50],
        "request_preview": request_text[:PREVIEW_CHARS],
        "response_preview": response_text[:PREVIEW_CHARS],
        "db_payload_generation": 1,
        # MLflow reads a trace's name from this column (the tag alone is not enough).
        "trace_name": header["endpoint"],
        "session_id": metadata.get("mlflow.trace.session"),
        # MLflow keeps token usage in columns (its UI and trace search read them), filled from
        # the metadata by its own function; the metadata row itself it does not keep.
        **_token_columns(metadata),
    }
    spans = [
        {
            "trace_id": trace_id,
            "experiment_id": experiment_id,
            "span_id": _hex(span["span_id"]),
            "parent_span_id": _hex(span.get("parent_span_id")),
            "name": span["name"],
            "type": _attr(span, "mlflow.spanType"),
            "status": _SPAN_STATUS.get(span["status"]["code"], "UNSET"),
            "start_time_unix_nano": span["start_time_unix_nano"],
            "end_time_unix_nano": span["end_time_unix_nano"],
            "content": orjson.dumps(span, default=str).decode(),
        }
        for span in record["spans"]
    ]
    return {
        "trace_info": [info],
        "trace_tags": [{"request_id": trace_id, "key": k, "value": v} for k, v in tags.items() if k not in _COLUMN_TAGS],
        "trace_request_metadata": [{"request_id": trace_id, "key": k, "value": str(v)[:8000]}
                                   for k, v in metadata.items() if k not in _COLUMN_METADATA],
        "spans": spans,
    }


#: Tags and metadata MLflow 3.17 keeps in ``trace_info``'s columns only (``trace_name``,
#: ``session_id``): its SQL store writes no row for them, and reads, searches and filters them
#: from the columns, never from a row (``SqlTraceInfo.to_mlflow_entity``, ``search_traces``).
#: A row would be ~1 in 12 of a trace's rows, each with two index entries, that nothing reads.
#: ``tests/unit/test_rows.py`` checks these against MLflow's own lists.
_COLUMN_TAGS = frozenset({"mlflow.traceName"})
_COLUMN_METADATA = frozenset({"mlflow.trace.session"})


_TOKEN_USAGE = "mlflow.trace.tokenUsage"
#: ``trace_info``'s token columns: the values of MLflow's ``TOKEN_COLUMN_BY_KEY``
#: (``mlflow.store.tracking.utils.trace_analytics``), named here because importing that module
#: loads all of MLflow (~2 s of CPU and ~130 MiB in the writer, which otherwise never needs it).
#: ``tests/unit/test_rows.py`` checks the two agree, so an MLflow upgrade that changes them fails
#: a test.
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "total_tokens", "cache_read_input_tokens",
                 "cache_creation_input_tokens", "cache_creation_input_tokens_above_1hr")
_NO_TOKENS: dict[str, None] = dict.fromkeys(TOKEN_COLUMNS)


def _token_columns(metadata: dict[str, str]) -> dict[str, int | None]:
    """``trace_info``'s token columns; every row carries all of them, so a batch of agent and
    LLM requests shares one INSERT statement. Only a trace with token usage (an LLM call's)
    needs MLflow's own reading of it, and loads MLflow for that."""
    columns = dict(_NO_TOKENS)
    if _TOKEN_USAGE in metadata:
        from mlflow.store.tracking.utils.trace_analytics import analytics_columns_from_metadata

        found = analytics_columns_from_metadata({_TOKEN_USAGE: metadata.pop(_TOKEN_USAGE)})
        columns.update({k: v for k, v in found.items() if k in columns})
    return columns


def _truncate(text: str | None, limit: int) -> tuple[str | None, bool]:
    if text is None or len(text) <= limit:
        return text, False
    return text[:limit], True


def inference_row(header: dict, record: dict, max_payload_chars: int) -> dict:
    request, request_cut = _truncate(_json_text(record.get("request")), max_payload_chars)
    response = record.get("response")
    response_text, response_cut = _truncate(None if response is None else _json_text(response), max_payload_chars)
    usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
    return {
        "request_id": header["request_id"],
        "client_request_id": header.get("client_request_id"),
        "timestamp_ms": header["ts_ms"],
        "endpoint": header["endpoint"],
        "served_entity": header.get("entity"),
        "model_name": header.get("model_name"),
        "model_version": header.get("model_version"),
        "status_code": header["status_code"],
        "latency_ms": header["latency_ms"],
        "caller": header.get("caller"),
        "route": header.get("route"),
        "stream": bool(header.get("stream")),
        "request": request,
        "response": response_text,
        "request_truncated": request_cut or bool(record.get("request_truncated")),
        "response_truncated": response_cut or bool(record.get("response_truncated")),
        "trace_id": record.get("trace_id"),
        "error": record.get("error"),
        # An LLM endpoint's call carries its token usage; an agent's request has none.
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "usage_estimated": usage.get("estimated") if usage else None,
        "shadow_of": header.get("shadow_of"),
    }
