"""MLflow's ``ChatAgent`` (the guide's legacy interface, "still supported").

``invocations`` takes Databricks' ChatAgent shape, ``{"messages", "context", "custom_inputs"}``,
and answers ``{"messages", "custom_outputs"}``; a stream is ``ChatAgentChunk``s. The OpenAI
routes reach it through ``chat_agent_openai``.

Like the ResponsesAgent adapter, this does what MLflow's ``_ChatAgentPyfuncWrapper`` does
(validate the request, call the agent with its parts, dump the answer with the wrapper's own
``_response_to_dict``) without ``PyFuncModel.predict``'s generic schema enforcement.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any


from agentwharf.serving.interfaces import chat_agent_openai as openai
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
from agentwharf.serving.openai_compat import to_openai_response, wrap_chat_stream, wrap_openai_stream


def _responses_answer(output: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    return to_openai_response(openai.as_responses_output(output), meta)


def _responses_events(chunks: Iterator[dict[str, Any]], meta: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return wrap_openai_stream(openai.as_responses_events(chunks), meta)


def _chat_events(chunks: Iterator[dict[str, Any]], meta: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return wrap_chat_stream(openai.as_responses_events(chunks), meta)


class ChatAgentInterface(ModelInterface):
    kind = "chat_agent"
    label = "ChatAgent"
    shape = ('{"messages": [{"role": "user", "content": "..."}], "context": {"conversation_id": "...", "user_id": "..."}, '
             '"custom_inputs": {...}} (context and custom_inputs optional)')
    look = CHAT_LOOK
    dialects = {
        INVOCATIONS: NATIVE,
        RESPONSES: Dialect(openai.responses_request, _responses_answer, _responses_events),
        CHAT: Dialect(openai.chat_request, openai.to_chat_answer, _chat_events),
    }

    def __init__(self, agent: Any):
        from mlflow.pyfunc import ChatAgent
        from mlflow.pyfunc.loaders.chat_agent import _ChatAgentPyfuncWrapper

        self.agent = agent
        self.streams = overrides(agent, ChatAgent)
        self.async_predict = is_async(agent, "predict")
        self.async_stream = self.streams and is_async(agent, "predict_stream")
        #: MLflow's wrapper, for its check and dump of the agent's answers.
        self.wrapper = _ChatAgentPyfuncWrapper(agent)

    def elsewhere(self, seen: str) -> str:
        if seen == RESPONSES_LOOK:
            return f": send Responses input to {ROUTE_PATHS[RESPONSES]}"
        return ", which this model does not take"

    def validate(self, body: dict[str, Any]) -> Any:
        from mlflow.types.agent import ChatAgentRequest

        return self.build(ChatAgentRequest, body, "messages")

    def predict(self, request: Any) -> dict[str, Any]:
        from mlflow.types.agent import ChatAgentResponse

        answer = self.agent.predict(request.messages, request.context, request.custom_inputs)
        return self.wrapper._response_to_dict(answer, ChatAgentResponse)

    def predict_stream(self, request: Any) -> Iterator[dict[str, Any]]:
        from mlflow.types.agent import ChatAgentChunk

        for chunk in self.agent.predict_stream(request.messages, request.context, request.custom_inputs):
            yield self.wrapper._response_to_dict(chunk, ChatAgentChunk)

    async def apredict(self, request: Any) -> dict[str, Any]:
        from mlflow.types.agent import ChatAgentResponse

        answer = await self.agent.predict(request.messages, request.context, request.custom_inputs)
        return self.wrapper._response_to_dict(answer, ChatAgentResponse)

    async def apredict_stream(self, request: Any) -> AsyncIterator[dict[str, Any]]:
        from mlflow.types.agent import ChatAgentChunk

        async for chunk in self.agent.predict_stream(request.messages, request.context, request.custom_inputs):
            yield self.wrapper._response_to_dict(chunk, ChatAgentChunk)

    def assemble(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """The chunks joined by message id: the answer ``predict`` would have given."""
        joiner = openai.MessageJoiner()
        for event in events:
            joiner.add(event)
        return joiner.response()
