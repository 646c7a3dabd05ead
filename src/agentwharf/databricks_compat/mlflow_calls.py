"""Calls to the platform's MLflow server *as the caller*, so MLflow's own permissions decide.

The facades in this package keep no state of their own: a Unity Catalog registered model is
MLflow's registered model, a Files API file is an MLflow artifact. Each call carries the
platform's secret and the caller's name (``auth.mlflow_plugin``), exactly as the MLflow proxy
does for MLflow's own clients, so a user can do through the facade only what MLflow lets them do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from fastapi import Request

from agentwharf.auth.caller import Caller
from agentwharf.auth.mlflow_plugin import vouching_headers
from agentwharf.errors import AgentwharfError, ForeignError, MlflowUnavailable, Unauthenticated, class_for
from agentwharf.tls import tls_context

#: MLflow's plain-text answers (its auth app's 401/403) by status.
_PLAIN_CODES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "RESOURCE_DOES_NOT_EXIST"}


def error_from(response: httpx.Response, body: bytes) -> AgentwharfError:
    """MLflow refused: its error code and message, with MLflow's own HTTP status (a 5xx of
    MLflow's is an MLflow outage to the caller: 503)."""
    try:
        data = orjson.loads(body)
        code, message = str(data.get("error_code", "INTERNAL_ERROR")), str(data.get("message", ""))
    except (orjson.JSONDecodeError, AttributeError):
        code = _PLAIN_CODES.get(response.status_code, "INTERNAL_ERROR")
        message = "MLflow: " + (body.decode(errors="replace").strip()[:500] or response.reason_phrase)
    if response.status_code >= 500:
        return MlflowUnavailable(f"MLflow failed ({response.status_code} {code}): {message}")
    known = class_for(code, response.status_code)
    if known is not None and known.http_status == response.status_code:
        return known(message)
    return ForeignError(message, code, response.status_code)


class MlflowCalls:
    def __init__(self, url: str, secret: str):
        self.secret = secret
        self.http = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0, connect=10.0), verify=tls_context())

    def headers(self, caller: Caller | None) -> dict[str, str]:
        """``caller=None`` is the platform itself (MLflow's admin): only after the caller's own
        right to the thing was checked through MLflow (see files_api)."""
        return vouching_headers(self.secret, caller.name if caller is not None else None)

    async def send(self, caller: Caller | None, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        request = self.http.build_request(method, path, headers=self.headers(caller), **kwargs)
        try:
            return await self.http.send(request, stream=stream)
        except httpx.HTTPError as error:
            raise MlflowUnavailable(f"MLflow server unreachable: {type(error).__name__}") from None

    async def json(self, caller: Caller | None, method: str, path: str, **kwargs: Any) -> dict:
        """MLflow's JSON answer.

        Raises:
            ForeignError: MLflow answered with an error (its code and status are kept).
            MlflowUnavailable: MLflow is down or failed.
        """
        response = await self.send(caller, method, path, **kwargs)
        if response.status_code >= 400:
            raise error_from(response, response.content)
        return response.json() if response.content else {}

    async def stream(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()

    async def close(self) -> None:
        await self.http.aclose()


def mlflow_calls(request: Request) -> MlflowCalls:
    """One client per control app, made on first use from the registry's MLflow address."""
    calls = getattr(request.app.state, "databricks_mlflow", None)
    if calls is None:
        registry = request.app.state.control.registry
        calls = MlflowCalls(registry.url, registry.secret)
        request.app.state.databricks_mlflow = calls
    return calls


def require_caller(request: Request) -> Caller:
    caller = request.scope.get("agentwharf.caller")
    if caller is None:
        raise Unauthenticated("Authentication required")
    return caller
