"""A test agent that answers every question with "ok": a worse version of the info agent for
the evaluation gate (it never echoes the question)."""

from uuid import uuid4

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse


class TerseAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        return ResponsesAgentResponse(output=[self.create_text_output_item(text="ok", id=str(uuid4()))])


mlflow.models.set_model(TerseAgent())
