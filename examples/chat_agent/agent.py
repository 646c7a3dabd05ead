"""A ChatAgent, written as older Databricks projects wrote them (MLflow's legacy agent interface,
which the guide says is "still supported"), as an MLflow "models from code" file.

It echoes the last user message. ``predict_stream`` streams the answer word by word as
``ChatAgentChunk``s sharing one message id, the way ChatAgent clients join them. Its
``custom_outputs`` show what reached it: the request's ``context`` and ``custom_inputs``.

ChatAgent methods are not traced automatically (ResponsesAgent's are), so ``@mlflow.trace``
marks the spans: ``predict`` or ``predict_stream`` with ``compose_reply`` nested under it,
all under the platform's span for the request.
"""

from collections.abc import Generator
from typing import Any
from uuid import uuid4

import mlflow
from mlflow.entities import SpanType
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentChunk, ChatAgentMessage, ChatAgentResponse, ChatContext


class EchoChatAgent(ChatAgent):
    @mlflow.trace(span_type=SpanType.AGENT)
    def predict(self, messages: list[ChatAgentMessage], context: ChatContext | None = None,
                custom_inputs: dict[str, Any] | None = None) -> ChatAgentResponse:
        reply = self.compose_reply(messages)
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=reply, id=str(uuid4()))],
                                 custom_outputs=self.seen(context, custom_inputs))

    @mlflow.trace(span_type=SpanType.AGENT)
    def predict_stream(self, messages: list[ChatAgentMessage], context: ChatContext | None = None,
                       custom_inputs: dict[str, Any] | None = None) -> Generator[ChatAgentChunk, None, None]:
        words = self.compose_reply(messages).split(" ")
        message_id = str(uuid4())
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=word if i == 0 else f" {word}", id=message_id),
                                 custom_outputs=self.seen(context, custom_inputs) if last else None)

    @mlflow.trace(span_type=SpanType.PARSER)
    def compose_reply(self, messages: list[ChatAgentMessage]) -> str:
        last = next((m.content for m in reversed(messages) if m.role == "user"), None)
        if last is None:
            raise ValueError("there is no user message to answer")
        return f"Echo: {last}"

    @staticmethod
    def seen(context: ChatContext | None, custom_inputs: dict[str, Any] | None) -> dict[str, Any]:
        return {"conversation_id": context.conversation_id if context else None, "custom_inputs": custom_inputs or {}}


mlflow.models.set_model(EchoChatAgent())
