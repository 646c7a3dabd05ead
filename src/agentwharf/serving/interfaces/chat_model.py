"""MLflow's ``ChatModel``: the OpenAI Chat Completions shape, on ``invocations`` and on
``/serving-endpoints/chat/completions`` alike (``messages``, ``temperature``, ``max_tokens``, ...),
answered with a chat completion, or ``chat.completion.chunk``s when streamed.

Requests are converted with MLflow's own wrapper (``_ChatModelPyfuncWrapper._convert_input``:
``ChatMessage.from_dict`` and ``ChatParams.from_dict``, which check every field) before the
model runs, and answers dumped with its ``_response_to_dict``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from agentwharf.serving.interfaces.base import (
    CHAT,
    CHAT_LOOK,
    INVOCATIONS,
    NATIVE,
    Dialect,
    ModelInterface,
    close,
    overrides,
    require_messages,
)

#: ChatParams fields typed ``float``: MLflow's dataclasses refuse an int there, where its schema
#: enforcement (which this path skips) would have converted it. OpenAI clients send ``0`` and ``1``.
_FLOAT_PARAMS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")


def _chat_request(body: dict[str, Any]) -> dict[str, Any]:
    require_messages(body)
    return {k: v for k, v in body.items() if k != "model"}


def _named(answer: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """OpenAI clients expect a completion's ``id`` and ``model``; a ChatModel may leave them out."""
    if not answer.get("id"):
        answer["id"] = f"chatcmpl-{meta.get('request_id', '')}"
    if not answer.get("model"):
        answer["model"] = meta.get("model", "")
    return answer


def _named_chunks(chunks: Iterator[dict[str, Any]], meta: dict[str, Any]) -> Iterator[dict[str, Any]]:
    try:
        for chunk in chunks:
            yield _named(chunk, meta)
    finally:
        close(chunks)


def join_chunks(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat completion chunks as the one completion they add up to (per choice index)."""
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            state = choices.setdefault(choice.get("index", 0), {"role": "assistant", "content": "", "finish_reason": None})
            delta = choice.get("delta") or {}
            state["role"] = delta.get("role") or state["role"]
            state["content"] += delta.get("content") or ""
            if delta.get("tool_calls"):
                state.setdefault("tool_calls", []).extend(delta["tool_calls"])
            state["finish_reason"] = choice.get("finish_reason") or state["finish_reason"]
    completion: dict[str, Any] = {"object": "chat.completion", "choices": [
        {"index": index, "message": {k: v for k, v in state.items() if k != "finish_reason"},
         "finish_reason": state["finish_reason"]} for index, state in sorted(choices.items())]}
    for key in ("id", "model", "usage", "custom_outputs"):
        if value := next((c[key] for c in reversed(chunks) if c.get(key)), None):
            completion[key] = value
    return completion


class ChatModelInterface(ModelInterface):
    kind = "chat_model"
    label = "ChatModel"
    shape = ('a chat completions request: {"messages": [{"role": "user", "content": "..."}], "temperature": 0.7, '
             '"max_tokens": 100, ...} (all but messages optional)')
    look = CHAT_LOOK
    dialects = {INVOCATIONS: NATIVE, CHAT: Dialect(_chat_request, _named, _named_chunks)}

    def __init__(self, model: Any, wrapper: Any = None):
        from mlflow.pyfunc import ChatModel
        from mlflow.pyfunc.loaders.chat_model import _ChatModelPyfuncWrapper

        self.model = model
        self.streams = overrides(model, ChatModel)
        #: MLflow's wrapper holds the model's context (its artifacts); a bare one if there is none.
        self.wrapper = wrapper if isinstance(wrapper, _ChatModelPyfuncWrapper) else _ChatModelPyfuncWrapper(model, None, None)
        # MLflow's wrapper decides on every call whether predict takes the context; once is enough.
        self._with_context = {name: self._takes_context(getattr(model, name)) for name in ("predict", "predict_stream")}

    @staticmethod
    def _takes_context(method: Any) -> bool:
        parameters = inspect.signature(method).parameters
        return "context" in parameters or len(parameters) == 3

    def validate(self, body: dict[str, Any]) -> tuple[list[Any], Any]:
        from mlflow.exceptions import MlflowException

        if "messages" not in body:
            raise self.invalid("'messages' is required (a list of messages)", body)
        body = {k: float(v) if k in _FLOAT_PARAMS and type(v) is int else v for k, v in body.items()}
        try:
            return self.wrapper._convert_input(body)
        except MlflowException as error:
            raise self.invalid(error.message, body) from None
        except (ValueError, TypeError, AttributeError) as error:
            raise self.invalid(str(error), body) from None

    def _call(self, name: str, request: tuple[list[Any], Any]) -> Any:
        messages, params = request
        method = getattr(self.model, name)
        if self._with_context[name]:
            return method(self.wrapper.context, messages, params)
        return method(messages, params)

    def predict(self, request: tuple[list[Any], Any]) -> dict[str, Any]:
        return self.wrapper._response_to_dict(self._call("predict", request))

    def predict_stream(self, request: tuple[list[Any], Any]) -> Iterator[dict[str, Any]]:
        for chunk in self._call("predict_stream", request):
            yield self.wrapper._streaming_response_to_dict(chunk)

    def assemble(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        return join_chunks(events)
