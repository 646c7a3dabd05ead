"""A test agent that calls a tool: it streams a few words, a function call, the tool's output and
then its answer, which names ``custom_inputs["city"]`` (default "Paris"), and reports token usage
on its trace as an LLM would (``mlflow.trace.tokenUsage``)."""

import time
from uuid import uuid4

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent


def _last_user_text(request: ResponsesAgentRequest) -> str:
    return next((m.content for m in reversed(request.input) if getattr(m, "role", None) == "user"), "")


@mlflow.trace(name="chat_model", span_type="CHAT_MODEL")
def _pretend_llm(text: str) -> str:
    span = mlflow.get_current_active_span()
    if span is not None:
        span.set_attribute("mlflow.chat.tokenUsage", {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19})
    return text


class ToolsAgent(ResponsesAgent):
    def _items(self, request: ResponsesAgentRequest) -> list[dict]:
        city = (request.custom_inputs or {}).get("city", "Paris")
        call_id = str(uuid4())
        answer = _pretend_llm(f"The weather in {city} is sunny. You said: {_last_user_text(request)}")
        return [
            self.create_function_call_item(id=str(uuid4()), call_id=call_id, name="get_weather",
                                           arguments=f'{{"city": "{city}"}}'),
            self.create_function_call_output_item(call_id=call_id, output=f"sunny in {city}"),
            self.create_text_output_item(text=answer, id=str(uuid4())),
        ]

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        return ResponsesAgentResponse(output=self._items(request))

    def predict_stream(self, request: ResponsesAgentRequest):
        items = self._items(request)
        text_item = items[-1]
        for word in ["Let", "me", "check..."]:
            time.sleep(0.15)
            yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=word + " ", item_id=text_item["id"]))
        for item in items:
            time.sleep(0.15)
            yield ResponsesAgentStreamEvent(type="response.output_item.done", item=item)


mlflow.models.set_model(ToolsAgent())
