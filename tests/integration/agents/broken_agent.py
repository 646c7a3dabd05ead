"""A test agent that logs fine but cannot load in a worker, as a model with a missing secret."""

import os

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

if os.environ.get("AGENTWHARF_SERVED_ENTITY"):
    raise RuntimeError("broken on purpose: CONNECTION_STRING is not set")


class BrokenAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        return ResponsesAgentResponse(output=[self.create_text_output_item(text="unreachable", id="1")])


mlflow.models.set_model(BrokenAgent())
