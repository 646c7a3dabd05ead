"""The benchmark's agent that waits, as agents do on an LLM call (an MLflow "models from code"
file, logged and served like the guide's EchoAgent).

``predict`` blocks for ``WAIT_S`` (``time.sleep``, as a synchronous LLM client would: MLflow
3.17 refuses to log a ResponsesAgent whose ``predict`` is async), then answers ``Waited: <text>``.
``predict_stream`` is an async generator that awaits ``GAP_S`` before each of ``TOKENS`` tokens,
as a streaming LLM call does, then sends the finished item: its own first token comes ``GAP_S``
after the call.
"""

import asyncio
import time
from uuid import uuid4

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

WAIT_S = 0.25
TOKENS = 20
GAP_S = 0.025


def _last_user_text(request: ResponsesAgentRequest) -> str:
    return [m for m in request.input if m.role == "user"][-1].content


class WaitAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        time.sleep(WAIT_S)
        return ResponsesAgentResponse(output=[self.create_text_output_item(text=f"Waited: {_last_user_text(request)}",
                                                                           id=str(uuid4()))])

    async def predict_stream(self, request: ResponsesAgentRequest):
        item_id = str(uuid4())
        for i in range(TOKENS):
            await asyncio.sleep(GAP_S)
            yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=f"t{i} ", item_id=item_id))
        text = "".join(f"t{i} " for i in range(TOKENS))
        yield ResponsesAgentStreamEvent(type="response.output_item.done", item=self.create_text_output_item(text=text, id=item_id))


mlflow.models.set_model(WaitAgent())
