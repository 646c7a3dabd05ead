"""A test agent that needs a package the platform does not have (emoji), and says which Python
it runs in. The logging process may lack emoji too (MLflow runs predict once while logging)."""

import sys
from uuid import uuid4

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

try:
    import emoji
except ImportError:  # only where the model is logged, never where it is served
    emoji = None


class EmojiAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        text = emoji.emojize("served :thumbs_up:") if emoji is not None else "no emoji here"
        item = self.create_text_output_item(text=text, id=str(uuid4()))
        return ResponsesAgentResponse(output=[item], custom_outputs={
            "python": sys.executable, "emoji": getattr(emoji, "__version__", None)})


mlflow.models.set_model(EmojiAgent())
