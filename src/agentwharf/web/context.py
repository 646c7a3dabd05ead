"""What the pages need from the running platform, handed over by the platform when it starts.

The web layer reads the control plane's state and services directly (same process), always as
the signed-in caller: endpoint views come from ``control.views`` (which hides load errors below
CAN_MANAGE), permission changes go through the REST route's own function, and MLflow is called
*as the caller* (``MlflowCalls``), so MLflow's permissions decide traces, queues and assessments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request

from agentwharf.auth.caller import Caller
from agentwharf.auth.levels import PermissionLevel
from agentwharf.control.routes import ControlState
from agentwharf.databricks_compat.mlflow_calls import MlflowCalls
from agentwharf.errors import NotFound, PermissionDenied, Unauthenticated
from agentwharf.store.models import Endpoint


@dataclass
class WebContext:
    control: ControlState
    mlflow: MlflowCalls
    #: Where worker logs are (``<home>/logs``), for the log tail.
    logs_dir: Path
    #: (model, version) -> the request shape its model takes (model versions never change).
    shapes: dict[tuple[str, str], str] = field(default_factory=dict)

    def level(self, caller: Caller, endpoint: str) -> PermissionLevel:
        return self.control.level_of(caller, endpoint)

    def endpoint_for(self, caller: Caller, name: str, needed: PermissionLevel) -> Endpoint:
        """The endpoint, if the caller has ``needed`` on it.

        Raises:
            NotFound: no such endpoint, or the caller may not even see it (the same answer, so
                a page never tells who cannot see an endpoint that it exists).
            PermissionDenied: the caller sees it but lacks ``needed``.
        """
        endpoint = self.control.endpoints.find(name)
        level = self.level(caller, name) if endpoint is not None else PermissionLevel.NO_PERMISSIONS
        if endpoint is None or not level.allows(PermissionLevel.CAN_VIEW):
            raise NotFound(f"There is no serving endpoint named {name!r} that you may see")
        if not level.allows(needed):
            raise PermissionDenied(f"You have {level.value} on endpoint {name!r}; this page needs {needed.value}")
        return endpoint


def context_of(request: Request) -> WebContext:
    return request.app.state.web


def caller_of(request: Request) -> Caller:
    """Set by the platform's front door on every request that reaches a page."""
    caller = request.scope.get("agentwharf.caller")
    if caller is None:
        raise Unauthenticated("Sign in first")
    if not caller.is_personal:
        raise PermissionDenied(f"A {caller.via} credential cannot open the platform's pages")
    return caller


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")
