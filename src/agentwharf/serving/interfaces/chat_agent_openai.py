"""ChatAgent requests and answers in the OpenAI routes' terms.

The Responses shape is the pivot: a ChatAgent's messages become Responses output items (with
MLflow's own item builders), and its chunks become Responses stream events; from there the
ResponsesAgent dialects in ``openai_compat`` frame them for ``/responses`` and
``/chat/completions``. Requests go the other way with MLflow's ``to_chat_completions_input``.

ChatAgent streams carry message deltas keyed by message id; clients are told to join the
``content`` of chunks that share an id (``ChatAgent.predict_stream``'s docstring).
``MessageJoiner`` does that once, for the Responses events and for the record alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pydantic

from agentwharf.serving.interfaces.base import InvalidRequest, close, describe_validation_error, require_messages
from agentwharf.serving.openai_compat import normalize_openai_request, text_of, to_chat_completion

#: The ChatAgent request fields an OpenAI request may carry along (in ``extra_body``).
_PASSED_ON = ("context", "custom_inputs")
_MESSAGE_FIELDS = ("role", "content", "name", "id", "tool_calls", "tool_call_id", "attachments")


# -- requests ----------------------------------------------------------------------------------


def _as_chat_agent_messages(messages: list[Any]) -> list[Any]:
    """Chat Completions messages as ChatAgent messages: text content, and the ``name`` a
    ChatAgent tool message must have (taken from the call it answers)."""
    tool_names: dict[str, str] = {}
    converted = []
    for message in messages:
        if not isinstance(message, dict):
            converted.append(message)  # ChatAgentRequest names what is wrong with it
            continue
        message = {k: v for k, v in message.items() if k in _MESSAGE_FIELDS}
        if isinstance(message.get("content"), list):
            message["content"] = text_of(message["content"])
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                tool_names[call.get("id")] = call["function"].get("name")
        if message.get("role") == "tool" and not message.get("name"):
            message["name"] = tool_names.get(message.get("tool_call_id")) or "tool"
        converted.append(message)
    return converted


def _passed_on(body: dict[str, Any]) -> dict[str, Any]:
    return {key: body[key] for key in _PASSED_ON if key in body}


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions request as a ChatAgent request (sampling parameters have no place in
    one and are dropped)."""
    return {"messages": _as_chat_agent_messages(require_messages(body)), **_passed_on(body)}


def responses_request(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses request (``input`` items, ``instructions``) as a ChatAgent request."""
    from mlflow.types.responses import ResponsesAgentRequest, to_chat_completions_input

    body = normalize_openai_request(body)
    if "input" not in body:
        raise InvalidRequest("Invalid Responses request: 'input' is required (a string or a list of input items)")
    try:
        items = ResponsesAgentRequest(input=body["input"]).input
    except pydantic.ValidationError as error:
        raise InvalidRequest(f"Invalid Responses request: {describe_validation_error(error)}") from None
    return {"messages": _as_chat_agent_messages(to_chat_completions_input(items)), **_passed_on(body)}


# -- answers -----------------------------------------------------------------------------------


def message_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One ChatAgent message as Responses output items: its text, its tool calls, or (a tool
    message) a tool call's output."""
    from mlflow.types.responses import create_function_call_item, create_function_call_output_item, create_text_output_item

    if message.get("role") == "tool":
        return [create_function_call_output_item(message.get("tool_call_id") or "", message.get("content") or "")]
    items = []
    if message.get("content"):
        items.append(create_text_output_item(message["content"], message.get("id") or str(uuid.uuid4())))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        items.append(create_function_call_item(call.get("id", ""), call.get("id", ""), function.get("name", ""),
                                               function.get("arguments", "")))
    return items


def _responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    return {"input_tokens": usage.get("prompt_tokens"), "output_tokens": usage.get("completion_tokens"),
            "total_tokens": usage.get("total_tokens")}


def as_responses_output(output: dict[str, Any]) -> dict[str, Any]:
    """A ChatAgent answer (``messages``, ``custom_outputs``, ``usage``) as a Responses one."""
    result: dict[str, Any] = {"output": [item for m in output.get("messages", []) for item in message_items(m)]}
    if output.get("custom_outputs") is not None:
        result["custom_outputs"] = output["custom_outputs"]
    if output.get("usage"):
        result["usage"] = _responses_usage(output["usage"])
    return result


def to_chat_answer(output: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """A ChatAgent answer as a chat completion: the assistant's text, in one message."""
    answer = to_chat_completion({k: v for k, v in as_responses_output(output).items() if k != "usage"}, meta)
    if output.get("usage"):
        answer["usage"] = output["usage"]
    if output.get("finish_reason"):
        answer["choices"][0]["finish_reason"] = output["finish_reason"]
    return answer


# -- streams -----------------------------------------------------------------------------------


class MessageJoiner:
    """Joins a ChatAgent stream's chunks into whole messages, by message id, in order."""

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.extras: dict[str, Any] = {}
        self._current: str | None = None

    def add(self, chunk: dict[str, Any]) -> str | None:
        """Take one chunk; returns the id of the message it ended (a chunk of another id came)."""
        for key in ("custom_outputs", "usage", "finish_reason"):
            if chunk.get(key) is not None:
                self.extras[key] = chunk[key]
        delta = chunk.get("delta") or {}
        message_id = delta.get("id")
        message = self.messages.get(message_id)
        if message is None:
            self.messages[message_id] = {k: v for k, v in delta.items() if v is not None}
        else:
            if delta.get("content"):
                message["content"] = (message.get("content") or "") + delta["content"]
            if delta.get("tool_calls"):
                message.setdefault("tool_calls", []).extend(delta["tool_calls"])
            for key, value in delta.items():
                if value is not None:
                    message.setdefault(key, value)
        ended, self._current = (self._current if self._current != message_id else None), message_id
        return ended

    def response(self) -> dict[str, Any]:
        """Everything so far as one ChatAgent answer."""
        return {"messages": list(self.messages.values()), **self.extras}


def as_responses_events(chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A ChatAgent stream as Responses stream events: a text delta per content chunk, and each
    message's items once it is complete (custom outputs ride on the last)."""
    joiner = MessageJoiner()
    done: set[str] = set()

    def finished(message_id: str) -> Iterator[dict[str, Any]]:
        done.add(message_id)
        for item in message_items(joiner.messages[message_id]):
            yield {"type": "response.output_item.done", "item": item}

    try:
        for chunk in chunks:
            ended = joiner.add(chunk)
            if ended is not None and ended not in done:
                yield from finished(ended)
            delta = chunk.get("delta") or {}
            if delta.get("content") and delta.get("role", "assistant") == "assistant":
                yield {"type": "response.output_text.delta", "item_id": delta.get("id"), "delta": delta["content"]}
    finally:
        close(chunks)
    pending = [event for message_id in list(joiner.messages) if message_id not in done for event in finished(message_id)]
    if pending and joiner.extras.get("custom_outputs") is not None:
        pending[-1] = {**pending[-1], "custom_outputs": joiner.extras["custom_outputs"]}
    yield from pending
