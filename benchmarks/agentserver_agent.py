"""The guide's EchoAgent behind MLflow AgentServer's ``@invoke`` / ``@stream`` decorators.

This is the "agent module" of MLflow's documented AgentServer layout: it registers the
functions, and ``agentserver_app.py`` (the "start_server" module) builds the server. The
EchoAgent class itself is imported from ``examples/echo/agent.py``, unchanged.
"""

import importlib.util
from pathlib import Path

from mlflow.genai.agent_server import invoke, stream
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "echo" / "agent.py"

_spec = importlib.util.spec_from_file_location("echo_example_agent", EXAMPLE)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

agent = _module.EchoAgent()


@invoke()
def echo_invoke(request: ResponsesAgentRequest) -> ResponsesAgentResponse:
    return agent.predict(request)


@stream()
def echo_stream(request: ResponsesAgentRequest):
    yield from agent.predict_stream(request)
