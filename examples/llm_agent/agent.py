"""A tool-calling ResponsesAgent that thinks with a platform LLM endpoint (the guide's pattern).

The LLM is a serving endpoint of the platform (``LLM_ENDPOINT``, an external model: see
log_and_deploy.py), reached with the official ``openai`` client. The agent declares it as a
resource when logged, so the platform gives its worker a credential that can query exactly that
endpoint, and sets ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` to it: ``OpenAI()`` works unchanged.
When the logged model also asks for on-behalf-of-user access
(``UserAuthPolicy(api_scopes=["serving.serving-endpoints"])``), each call goes out with the
*caller's* short-lived token instead, so it counts against the caller's own rate limits.

It streams (``predict_stream``), and its trace nests an LLM span per model call and a TOOL span
per tool call under the request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from typing import Any
from uuid import uuid4

import mlflow
from mlflow.entities import SpanType
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent
from openai import OpenAI

from agentwharf.credentials import NoCredentials, system_credentials, user_credentials

LLM_ENDPOINT = os.environ.get("LLM_ENDPOINT", "my-llm")
MAX_TURNS = 5


@mlflow.trace(span_type=SpanType.TOOL)
def get_weather(city: str) -> str:
    """Today's weather in a city (a stand-in for a real tool)."""
    return f"It is sunny and 21 degrees Celsius in {city}."


TOOLS = {"get_weather": get_weather}
TOOL_SPECS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Today's weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]


def llm_client() -> OpenAI | None:
    """The caller's credential when the model asked for one, else the agent's own; None outside
    serving (MLflow runs predict once as it logs the model).

    No retries: a rate-limited caller should hear so at once (429 says when to come back), not
    hold a serving thread through the limit's window, outliving its short-lived token."""
    try:
        user = user_credentials()
        return OpenAI(base_url=f"{user.host}/serving-endpoints", api_key=user.token, max_retries=0)
    except NoCredentials:
        pass
    try:
        system_credentials()
    except NoCredentials:
        return None
    return OpenAI(max_retries=0)  # OPENAI_BASE_URL and OPENAI_API_KEY come from the platform


class ToolCallingAgent(ResponsesAgent):
    @mlflow.trace(span_type=SpanType.LLM)
    def call_llm(self, messages: list[dict[str, Any]]) -> Generator[dict[str, Any], None, None]:
        stream = llm_client().chat.completions.create(model=LLM_ENDPOINT, messages=self.prep_msgs_for_cc_llm(messages),
                                                      tools=TOOL_SPECS, stream=True)
        for chunk in stream:
            yield chunk.to_dict()

    def run_tool(self, call: dict[str, Any], messages: list[dict[str, Any]]) -> ResponsesAgentStreamEvent:
        result = TOOLS[call["name"]](**json.loads(call["arguments"] or "{}"))
        output = self.create_function_call_output_item(call["call_id"], result)
        messages.append(output)
        return ResponsesAgentStreamEvent(type="response.output_item.done", item=output)

    def predict_stream(self, request: ResponsesAgentRequest) -> Generator[ResponsesAgentStreamEvent, None, None]:
        if llm_client() is None:
            text = f"Deploy me on agentwharf with {LLM_ENDPOINT} declared as a resource."
            yield ResponsesAgentStreamEvent(type="response.output_item.done",
                                            item=self.create_text_output_item(text=text, id=str(uuid4())))
            return
        messages = [item.model_dump() if hasattr(item, "model_dump") else dict(item) for item in request.input]
        for _ in range(MAX_TURNS):
            last = messages[-1]
            if last.get("role") == "assistant":
                return
            if last.get("type") == "function_call":
                yield self.run_tool(last, messages)
            else:
                yield from self.output_to_responses_items_stream(self.call_llm(messages), aggregator=messages)

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        items = [event.item for event in self.predict_stream(request) if event.type == "response.output_item.done"]
        return ResponsesAgentResponse(output=items, custom_outputs=request.custom_inputs)


mlflow.models.set_model(ToolCallingAgent())
