"""A test agent whose ``predict`` is a coroutine function and whose ``predict_stream`` is an
async generator, each awaiting a traced async helper (its span must nest in the request's trace).

MLflow 3.17 refuses to log a ResponsesAgent whose ``predict`` is async: logging calls ``predict``
on an input example and validates what it returns, a coroutine. So the class has a synchronous
``predict`` while being logged and the async one only when a worker loads it
(``AGENTWHARF_SERVED_ENTITY`` is set there), which is what the worker's async path is for.
"""

import asyncio
import os
from uuid import uuid4

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

SERVED = bool(os.environ.get("AGENTWHARF_SERVED_ENTITY"))


@mlflow.trace(name="think")
async def _think(text: str) -> str:
    await asyncio.sleep(0.01)
    return f"Async: {text}"


def _last_user_text(request: ResponsesAgentRequest) -> str:
    return [m for m in request.input if m.role == "user"][-1].content


class AsyncAgent(ResponsesAgent):
    if SERVED:
        async def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
            text = await _think(_last_user_text(request))
            return ResponsesAgentResponse(output=[self.create_text_output_item(text=text, id=str(uuid4()))])
    else:
        def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
            return ResponsesAgentResponse(output=[self.create_text_output_item(text="logging", id=str(uuid4()))])

    async def predict_stream(self, request: ResponsesAgentRequest):
        text, item_id = await _think(_last_user_text(request)), str(uuid4())
        for i, word in enumerate(text.split(" ")):
            yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=word if i == 0 else f" {word}", item_id=item_id))
        yield ResponsesAgentStreamEvent(type="response.output_item.done", item=self.create_text_output_item(text=text, id=item_id))


mlflow.models.set_model(AsyncAgent())
