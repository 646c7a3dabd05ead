"""A ChatModel (MLflow's OpenAI-compatible chat interface), as an MLflow "models from code" file.

It echoes the last user message, cut to ``max_tokens`` words when the request sets it (then
``finish_reason`` is ``"length"``), and streams it word by word as ``ChatCompletionChunk``s.
``@mlflow.trace`` marks its spans (ChatModel methods are not traced automatically).
"""

from collections.abc import Generator

import mlflow
from mlflow.entities import SpanType
from mlflow.pyfunc import ChatModel
from mlflow.types.llm import (
    ChatChoice,
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatMessage,
    ChatParams,
    TokenUsageStats,
)


def _text(content) -> str:
    if isinstance(content, list):  # multimodal content parts
        return "".join(part.get("text", "") for part in content)
    return content or ""


class EchoChatModel(ChatModel):
    @mlflow.trace(span_type=SpanType.CHAT_MODEL)
    def predict(self, context, messages: list[ChatMessage], params: ChatParams) -> ChatCompletionResponse:
        words, finish = self.compose_reply(messages, params)
        reply = ChatMessage(role="assistant", content=" ".join(words))
        usage = TokenUsageStats(prompt_tokens=len(messages), completion_tokens=len(words),
                                total_tokens=len(messages) + len(words))
        return ChatCompletionResponse(choices=[ChatChoice(message=reply, finish_reason=finish)], model="echo-chat-model",
                                      usage=usage)

    @mlflow.trace(span_type=SpanType.CHAT_MODEL)
    def predict_stream(self, context, messages: list[ChatMessage],
                       params: ChatParams) -> Generator[ChatCompletionChunk, None, None]:
        words, finish = self.compose_reply(messages, params)
        for i, word in enumerate(words):
            delta = ChatChoiceDelta(role="assistant", content=word if i == 0 else f" {word}")
            yield ChatCompletionChunk(choices=[ChatChunkChoice(delta=delta)], model="echo-chat-model")
        last = ChatChunkChoice(delta=ChatChoiceDelta(), finish_reason=finish)
        yield ChatCompletionChunk(choices=[last], model="echo-chat-model")

    @mlflow.trace(span_type=SpanType.PARSER)
    def compose_reply(self, messages: list[ChatMessage], params: ChatParams) -> tuple[list[str], str]:
        last = next((_text(m.content) for m in reversed(messages) if m.role == "user"), None)
        if last is None:
            raise ValueError("there is no user message to answer")
        words = f"Echo: {last}".split(" ")
        if params.max_tokens is not None and len(words) > params.max_tokens:
            return words[: params.max_tokens], "length"
        return words, "stop"


mlflow.models.set_model(EchoChatModel())
