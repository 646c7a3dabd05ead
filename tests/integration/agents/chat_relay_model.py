"""A test ChatModel that passes the last user message on to another endpoint (a ChatAgent), on
behalf of the caller: ``custom_inputs.target`` names it. It answers with the target's reply, or
with why there is none (no user credential, or the target's refusal and status).
"""

import httpx
import mlflow
from mlflow.pyfunc import ChatModel
from mlflow.types.llm import (
    ChatChoice,
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatMessage,
)

from agentwharf.credentials import NoCredentials, user_credentials


def _relay(messages, params) -> str:
    target = (params.custom_inputs or {}).get("target")
    try:
        credentials = user_credentials()
    except NoCredentials:
        return "no user credentials"  # also what MLflow sees while it logs the model
    answer = httpx.post(f"{credentials.host}/serving-endpoints/{target}/invocations", headers=credentials.headers,
                        json={"messages": [{"role": "user", "content": messages[-1].content}]}, timeout=30)
    if answer.status_code != 200:
        return f"refused with {answer.status_code}"
    return answer.json()["messages"][-1]["content"]


class ChatRelay(ChatModel):
    def predict(self, context, messages, params):
        return ChatCompletionResponse(choices=[ChatChoice(message=ChatMessage(role="assistant", content=_relay(messages, params)))])

    def predict_stream(self, context, messages, params):
        yield ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(content=_relay(messages, params)))])


mlflow.models.set_model(ChatRelay())
