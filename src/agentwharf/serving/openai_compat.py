"""The OpenAI Responses API dialect of ``POST /serving-endpoints/responses``.

The official ``openai`` client sends ``model`` (our endpoint name), may send ``input`` as a plain
string and ``instructions`` as a system prompt, and expects a ``response`` object back, or when
streaming, events framed by ``response.created`` and ``response.completed``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any


def normalize_openai_request(body: dict[str, Any]) -> dict[str, Any]:
    """Turn an OpenAI Responses request into a ResponsesAgent request."""
    body = dict(body)
    body.pop("model", None)
    if isinstance(body.get("input"), str):
        body["input"] = [{"role": "user", "content": body["input"]}]
    instructions = body.pop("instructions", None)
    if isinstance(instructions, str) and isinstance(body.get("input"), list):
        body["input"] = [{"role": "system", "content": instructions}, *body["input"]]
    return body


def _envelope(meta: dict[str, Any], status: str, created_at: int) -> dict[str, Any]:
    return {
        "id": f"resp_{meta.get('request_id', '')}",
        "object": "response",
        "created_at": created_at,
        "model": meta.get("model", ""),
        "status": status,
    }


def to_openai_response(output: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    return {**_envelope(meta, "completed", int(time.time())), **output}


def wrap_openai_stream(events: Iterator[dict[str, Any]], meta: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Frame the agent's events the way OpenAI streams do, numbering each one."""
    created_at = int(time.time())
    sequence = 0
    yield {"type": "response.created", "sequence_number": sequence, "response": {**_envelope(meta, "in_progress", created_at), "output": []}}
    items: list[dict[str, Any]] = []
    try:
        for event in events:
            sequence += 1
            if event.get("type") == "response.output_item.done" and "item" in event:
                items.append(event["item"])
            yield {**event, "sequence_number": sequence}
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    yield {"type": "response.completed", "sequence_number": sequence + 1, "response": {**_envelope(meta, "completed", created_at), "output": items}}
