"""A test agent that reports where it runs and misbehaves on request (custom_inputs):

- ``raise``: raise ValueError with that message; ``crash``: exit the process at once;
- ``events``/``delay``: stream that many deltas, sleeping between them;
- ``closed_marker``: a path written when the stream is closed early (client went away);
- ``env``: names of environment variables to report back.
"""

import os
import time
from pathlib import Path
from uuid import uuid4

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent


def _last_user_text(request: ResponsesAgentRequest) -> str:
    return next((m.content for m in reversed(request.input) if getattr(m, "role", None) == "user"), "")


def _info(custom: dict) -> dict:
    return {
        "pid": os.getpid(),
        "entity": os.environ.get("AGENTWHARF_SERVED_ENTITY"),
        "experiment_id": os.environ.get("MLFLOW_EXPERIMENT_ID"),
        "env": {name: os.environ.get(name) for name in custom.get("env", [])},
    }


class InfoAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        custom = request.custom_inputs or {}
        if custom.get("raise"):
            raise ValueError(custom["raise"])
        if custom.get("crash"):
            os._exit(17)
        time.sleep(float(custom.get("sleep", 0)))
        item = self.create_text_output_item(text=f"Echo: {_last_user_text(request)}", id=str(uuid4()))
        return ResponsesAgentResponse(output=[item], custom_outputs=_info(custom))

    def predict_stream(self, request: ResponsesAgentRequest):
        custom = request.custom_inputs or {}
        item_id = str(uuid4())
        try:
            for i in range(int(custom.get("events", 3))):
                time.sleep(float(custom.get("delay", 0)))
                yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=f"part{i} ", item_id=item_id))
            if custom.get("raise_midway"):
                raise RuntimeError(custom["raise_midway"])
            text = f"Echo: {_last_user_text(request)}"
            yield ResponsesAgentStreamEvent(type="response.output_item.done", item=self.create_text_output_item(text=text, id=item_id),
                                            custom_outputs=_info(custom))
        except GeneratorExit:
            if custom.get("closed_marker"):
                Path(custom["closed_marker"]).write_text("closed")
            raise


mlflow.models.set_model(InfoAgent())
