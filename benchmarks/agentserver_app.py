"""MLflow AgentServer serving the EchoAgent, started the documented way.

    MLFLOW_TRACKING_URI=sqlite:///... MLFLOW_EXPERIMENT_ID=1 python agentserver_app.py --port P

``AgentServer.run`` parses ``--port`` (and ``--workers``, default 1) and runs uvicorn on
``agentserver_app:app``; uvicorn re-imports this module, which is why the ``@invoke`` functions
live in their own module (registering twice raises): ``agentserver_agent`` (the EchoAgent), or
the one ``BENCHMARK_AGENT_MODULE`` names (``agentserver_wait_agent``).
"""

import importlib
import os

from mlflow.genai.agent_server import AgentServer

# Registers the @invoke / @stream functions.
importlib.import_module(os.environ.get("BENCHMARK_AGENT_MODULE", "agentserver_agent"))

agent_server = AgentServer("ResponsesAgent")
app = agent_server.app

if __name__ == "__main__":
    agent_server.run(app_import_string="agentserver_app:app", host="127.0.0.1")
