"""A test agent that waits as agents do on an LLM call: ``predict`` blocks in ``time.sleep``
(a synchronous agent: the worker runs it in a pool thread), ``predict_stream`` is an async
generator that awaits between its tokens (the worker runs it on its event loop).

custom_inputs: ``wait`` seconds ``predict`` sleeps (default 0.5); ``tokens`` and ``gap``
(seconds) for the stream (default 3 and 0.05).
"""

import asyncio
import time
from uuid import uuid4

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent


@mlflow.trace(name="token")
async def _token(i: int, gap: float) -> str:
    await asyncio.sleep(gap)
    return f"t{i}"


class WaitingAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        time.sleep(float((request.custom_inputs or {}).get("wait", 0.5)))
        return ResponsesAgentResponse(output=[self.create_text_output_item(text="waited", id=str(uuid4()))])

    async def predict_stream(self, request: ResponsesAgentRequest):
        custom = request.custom_inputs or {}
        item_id, words = str(uuid4()), []
        for i in range(int(custom.get("tokens", 3))):
            words.append(await _token(i, float(custom.get("gap", 0.05))))
            yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=words[-1], item_id=item_id))
        yield ResponsesAgentStreamEvent(type="response.output_item.done",
                                        item=self.create_text_output_item(text=" ".join(words), id=item_id))


mlflow.models.set_model(WaitingAgent())
