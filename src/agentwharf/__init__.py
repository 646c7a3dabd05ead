"""agentwharf: deploy, serve and govern MLflow 3 agents on your own machines.

The public surface is small: ``agentwharf.agents`` (deploy and friends) and the error type.
"""

from agentwharf.errors import AgentwharfError, DeploymentFailed

__version__ = "0.1.0"

__all__ = ["AgentwharfError", "DeploymentFailed", "__version__", "agents"]


def __getattr__(name: str):
    # `from agentwharf import agents` without importing httpx for users of the server side.
    if name == "agents":
        import importlib

        return importlib.import_module("agentwharf.agents")
    raise AttributeError(name)
