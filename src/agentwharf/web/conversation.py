"""A trace's request and response as a conversation (what a reviewer reads), in every request
shape the platform serves: Responses (``input`` / ``output`` items, tool calls included),
ChatAgent and chat completions (``messages`` / ``choices``), anything else as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Turn:
    role: str
    #: ``text``, ``tool_call``, ``tool_output`` or ``json``.
    kind: str
    text: str
    name: str = ""


def _load(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _unwrap(value: Any) -> Any:
    """Spans of MLflow's own wrappers hold ``{"request": {...}}``; the platform's root span the body."""
    value = _load(value)
    if isinstance(value, dict) and set(value) == {"request"}:
        return _load(value["request"])
    return value


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return "" if content is None else json.dumps(content, indent=2)


def _item(item: dict) -> list[Turn]:
    kind = item.get("type")
    if kind == "function_call":
        return [Turn("assistant", "tool_call", str(item.get("arguments", "")), str(item.get("name", "")))]
    if kind == "function_call_output":
        return [Turn("tool", "tool_output", _text(item.get("output")), str(item.get("call_id", "")))]
    if "role" in item or kind == "message":
        return _message(item)
    return [Turn("assistant", "json", json.dumps(item, indent=2))]


def _message(message: dict) -> list[Turn]:
    role = str(message.get("role", "assistant"))
    turns = []
    text = _text(message.get("content"))
    if text:
        turns.append(Turn("tool" if role == "tool" else role, "tool_output" if role == "tool" else "text", text,
                          str(message.get("name") or "")))
    for call in message.get("tool_calls") or []:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        turns.append(Turn(role, "tool_call", str(function.get("arguments", "")), str(function.get("name", ""))))
    return turns


def request_turns(request: Any) -> list[Turn]:
    request = _unwrap(request)
    if isinstance(request, dict):
        if isinstance(request.get("input"), str):
            return [Turn("user", "text", request["input"])]
        for key in ("input", "messages"):
            if isinstance(request.get(key), list):
                return [turn for item in request[key] if isinstance(item, dict) for turn in _item(item)]
    if request in (None, ""):
        return []
    return [Turn("user", "json", request if isinstance(request, str) else json.dumps(request, indent=2))]


def response_turns(response: Any) -> list[Turn]:
    response = _load(response)
    if isinstance(response, dict):
        if isinstance(response.get("output"), list):
            return [turn for item in response["output"] if isinstance(item, dict) for turn in _item(item)]
        if isinstance(response.get("messages"), list):
            return [turn for m in response["messages"] if isinstance(m, dict) for turn in _message(m)]
        if isinstance(response.get("choices"), list):
            return [turn for c in response["choices"] if isinstance(c, dict) for turn in _message(c.get("message") or {})]
    if response in (None, ""):
        return []
    return [Turn("assistant", "json", response if isinstance(response, str) else json.dumps(response, indent=2))]


def conversation(request: Any, response: Any) -> list[Turn]:
    """The whole exchange, oldest first."""
    return request_turns(request) + response_turns(response)
