"""The guide's EchoAgent (step 1), written as an MLflow "models from code" file.

It echoes the last user message. ``predict_stream`` streams it word by word, as the guide
recommends every agent do, with the final item carrying the whole text.
"""

from collections.abc import Generator
from uuid import uuid4

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent


class EchoAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        # Get the last user message
        last_message = None
        for msg in request.input:
            if msg.role == "user":
                last_message = msg

        # Create response
        output_item = self.create_text_output_item(text=f"Echo: {last_message.content}", id=str(uuid4()))
        return ResponsesAgentResponse(output=[output_item])

    def predict_stream(self, request: ResponsesAgentRequest) -> Generator[ResponsesAgentStreamEvent, None, None]:
        text = self.predict(request).output[0].content[0]["text"]
        item_id = str(uuid4())
        for i, word in enumerate(text.split(" ")):
            yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=word if i == 0 else f" {word}", item_id=item_id))
        yield ResponsesAgentStreamEvent(type="response.output_item.done", item=self.create_text_output_item(text=text, id=item_id))


mlflow.models.set_model(EchoAgent())
