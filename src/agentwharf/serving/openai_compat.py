"""The OpenAI Responses API dialect of ``POST /serving-endpoints/responses``.

The official ``openai`` client sends ``model`` (our endpoint name), may send ``input`` as a plain
string and ``instructions`` as a system prompt, and expects a ``response`` object back, or when
streaming, events framed by ``response.created`` and ``response.completed``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from agentwharf.serving.interfaces.base import close, require_messages


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
        close(events)
    yield {"type": "response.completed", "sequence_number": sequence + 1, "response": {**_envelope(meta, "completed", created_at), "output": items}}


# -- Chat Completions --------------------------------------------------------------------------


def text_of(content: Any) -> Any:
    """Chat content may be a list of parts; a ResponsesAgent or ChatAgent message takes text."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content


def normalize_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """Turn a Chat Completions request into a ResponsesAgent request.

    Raises:
        InvalidRequest: the request has no ``messages`` list.
    """
    messages = require_messages(body)
    body = dict(body)
    body.pop("model", None)
    body.pop("messages")
    body["input"] = [
        {"role": m.get("role"), "content": text_of(m.get("content"))} if isinstance(m, dict) else m for m in messages
    ]
    if "max_tokens" in body:
        body["max_output_tokens"] = body.pop("max_tokens")
    for unsupported in ("n", "stop", "logprobs", "stream_options", "response_format", "seed", "frequency_penalty", "presence_penalty"):
        body.pop(unsupported, None)
    return body


def _message_text(items: list[dict[str, Any]]) -> str:
    texts = []
    for item in items:
        if item.get("type") == "message":
            texts.extend(part.get("text", "") for part in item.get("content", []) if isinstance(part, dict))
    return "".join(texts)


def to_chat_completion(output: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    answer = {
        "id": f"chatcmpl-{meta.get('request_id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": meta.get("model", ""),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": _message_text(output.get("output", []))},
                     "finish_reason": "stop"}],
    }
    for extra in ("usage", "custom_outputs"):
        if output.get(extra):
            answer[extra] = output[extra]
    return answer


def wrap_chat_stream(events: Iterator[dict[str, Any]], meta: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The agent's Responses events as ``chat.completion.chunk`` objects."""
    base = {"id": f"chatcmpl-{meta.get('request_id', '')}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": meta.get("model", "")}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    streamed: set[str] = set()
    try:
        for event in events:
            kind = event.get("type")
            if kind == "response.output_text.delta":
                streamed.add(event.get("item_id", ""))
                yield chunk({"content": event.get("delta", "")})
            elif kind == "response.output_item.done" and event.get("item", {}).get("id") not in streamed:
                # An agent that sends only whole items: each becomes one chunk.
                if text := _message_text([event.get("item", {})]):
                    yield chunk({"content": text})
    finally:
        close(events)
    yield chunk({}, "stop")
