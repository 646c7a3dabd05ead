"""The benchmark's agent that waits (``wait_agent.py``) behind MLflow AgentServer's ``@invoke`` /
``@stream``, in the form AgentServer serves best: ``async`` functions that await their wait.

AgentServer calls a synchronous ``@invoke`` function on its event loop, so ``WaitAgent.predict``
(``time.sleep``) as it is would answer one request at a time (4 a second). This is the same wait,
``await asyncio.sleep(WAIT_S)``, with the same answer; the stream is ``WaitAgent.predict_stream``
itself (an async generator).
"""

import asyncio
import importlib.util
from pathlib import Path
from uuid import uuid4

from mlflow.genai.agent_server import invoke, stream
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

_spec = importlib.util.spec_from_file_location("wait_agent", Path(__file__).resolve().parent / "wait_agent.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

agent = _module.WaitAgent()


@invoke()
async def wait_invoke(request: ResponsesAgentRequest) -> ResponsesAgentResponse:
    await asyncio.sleep(_module.WAIT_S)
    text = f"Waited: {[m for m in request.input if m.role == 'user'][-1].content}"
    return ResponsesAgentResponse(output=[agent.create_text_output_item(text=text, id=str(uuid4()))])


@stream()
async def wait_stream(request: ResponsesAgentRequest):
    async for event in agent.predict_stream(request):
        yield event
