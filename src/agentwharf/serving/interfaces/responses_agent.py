"""MLflow's ``ResponsesAgent``: the guide's recommended interface.

The adapter does what MLflow's pyfunc wrapper (``_ResponsesAgentPyfuncWrapper``) does (build a
``ResponsesAgentRequest``, call the agent, dump with ``exclude_none``) but skips
``PyFuncModel.predict``'s generic input handling, which costs ~10x the agent itself
(see shared/reference/performance-facts.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pydantic

from agentwharf.serving.interfaces.base import (
    CHAT,
    CHAT_LOOK,
    INVOCATIONS,
    NATIVE,
    RESPONSES,
    RESPONSES_LOOK,
    ROUTE_PATHS,
    Dialect,
    ModelInterface,
    is_async,
    overrides,
)
from agentwharf.serving.openai_compat import (
    normalize_chat_request,
    normalize_openai_request,
    to_chat_completion,
    to_openai_response,
    wrap_chat_stream,
    wrap_openai_stream,
)


def _dump(value: Any) -> dict[str, Any]:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(exclude_none=True)
    return value


class ResponsesAgentInterface(ModelInterface):
    kind = "responses_agent"
    label = "ResponsesAgent"
    shape = ('{"input": [{"role": "user", "content": "..."}], "context": {...}, "custom_inputs": {...}} '
             '(context and custom_inputs optional)')
    look = RESPONSES_LOOK
    dialects = {
        INVOCATIONS: NATIVE,
        RESPONSES: Dialect(normalize_openai_request, to_openai_response, wrap_openai_stream),
        CHAT: Dialect(normalize_chat_request, to_chat_completion, wrap_chat_stream),
    }

    def __init__(self, agent: Any):
        from mlflow.pyfunc import ResponsesAgent

        self.agent = agent
        self.streams = overrides(agent, ResponsesAgent)
        self.async_predict = is_async(agent, "predict")
        self.async_stream = self.streams and is_async(agent, "predict_stream")

    def elsewhere(self, seen: str) -> str:
        if seen == CHAT_LOOK:
            return f": send chat messages to {ROUTE_PATHS[CHAT]}"
        return ", which this model does not take"

    def validate(self, body: dict[str, Any]) -> Any:
        from mlflow.types.responses import ResponsesAgentRequest

        if isinstance(body.get("input"), str):  # one user message, as OpenAI's Responses API takes it
            body = {**body, "input": [{"role": "user", "content": body["input"]}]}
        return self.build(ResponsesAgentRequest, body, "input")

    def predict(self, request: Any) -> dict[str, Any]:
        return _dump(self.agent.predict(request))

    def predict_stream(self, request: Any) -> Iterator[dict[str, Any]]:
        for event in self.agent.predict_stream(request):
            yield _dump(event)

    async def apredict(self, request: Any) -> dict[str, Any]:
        return _dump(await self.agent.predict(request))

    async def apredict_stream(self, request: Any) -> AsyncIterator[dict[str, Any]]:
        async for event in self.agent.predict_stream(request):
            yield _dump(event)

    def assemble(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """The stream's finished items, as MLflow's own output reducer collects them."""
        return {"output": [e["item"] for e in events if e.get("type") == "response.output_item.done" and "item" in e]}
