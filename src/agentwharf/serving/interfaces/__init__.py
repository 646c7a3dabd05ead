"""The model interfaces a worker serves, and which routes reach each.

    interface        invocations takes                            /responses          /chat/completions
    ResponsesAgent   {"input", "context", "custom_inputs"}        yes                 yes (messages as input)
    ChatAgent        {"messages", "context", "custom_inputs"}     yes (input items    yes
                                                                  as messages)
    ChatModel        a chat completions request                   400: use chat/      yes
                                                                  completions
    other pyfunc     MLflow's scoring protocol                    400: use            400: use invocations
                                                                  invocations

``"stream": true`` works on every route an interface answers if its model implements
``predict_stream``; otherwise it is a 400. ``adapter_for`` picks the interface of a loaded model.
"""

from __future__ import annotations

from typing import Any

from agentwharf.serving.interfaces.base import INVOCATIONS, Call, InvalidRequest, ModelInterface, close

__all__ = ["INVOCATIONS", "Call", "InvalidRequest", "ModelInterface", "adapter_for", "close"]


def _raw_model(pyfunc_model: Any) -> Any:
    try:
        return pyfunc_model.get_raw_model()
    except Exception:  # plain pyfunc wrappers have no raw model
        return None


def adapter_for(pyfunc_model: Any) -> ModelInterface:
    """The interface of a model loaded with ``mlflow.pyfunc.load_model``."""
    # Imported here: each pulls in MLflow's schema types, and a worker needs only its own.
    from mlflow.pyfunc import ChatAgent, ChatModel, ResponsesAgent

    raw = _raw_model(pyfunc_model)
    if isinstance(raw, ResponsesAgent):
        from agentwharf.serving.interfaces.responses_agent import ResponsesAgentInterface

        return ResponsesAgentInterface(raw)
    if isinstance(raw, ChatAgent):
        from agentwharf.serving.interfaces.chat_agent import ChatAgentInterface

        return ChatAgentInterface(raw)
    if isinstance(raw, ChatModel):
        from agentwharf.serving.interfaces.chat_model import ChatModelInterface

        return ChatModelInterface(raw, getattr(pyfunc_model, "_model_impl", None))
    from agentwharf.serving.interfaces.pyfunc import PyfuncInterface

    return PyfuncInterface(pyfunc_model)
