"""The model interfaces a worker serves, and which routes reach each.

=================  ===============================  ==========================  ============================
interface          ``invocations`` takes             ``/serving-endpoints/        ``/serving-endpoints/chat/
                                                     responses``                  completions``
=================  ===============================  ==========================  ============================
ResponsesAgent     ``{"input", "context",            yes                          yes (messages as input)
                   "custom_inputs"}``
ChatAgent          ``{"messages", "context",         yes (input items as          yes
                   "custom_inputs"}``                messages)
ChatModel          chat completions request          no: 400 naming chat/         yes
                                                     completions
other pyfunc       MLflow's scoring protocol         no: 400 naming invocations   no: 400 naming invocations
=================  ===============================  ==========================  ============================

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
