"""Reverse proxy from the platform's base URL to its MLflow server, so MLflow's REST API,
artifact service and UI work unchanged at ``<base>/``. Bodies stream both ways.

The caller's token stops here: MLflow gets the platform's secret and the caller's name instead
(see ``auth.mlflow_plugin``), and decides with its own permissions.
"""

from __future__ import annotations

import orjson
import httpx

from agentwharf.auth.gatekeeper import COOKIE
from agentwharf.auth.mlflow_plugin import PRINCIPAL_HEADER, SECRET_HEADER, vouching_headers
from agentwharf.serving.gateway import send_json

#: Headers a client could use to speak for the platform; never forwarded from outside.
_TRUSTED = {b"authorization", b"cookie", SECRET_HEADER.lower().encode(), PRINCIPAL_HEADER.lower().encode()}
#: Where MLflow creates registered models; a new model gets the prefix grants it falls under.
_CREATE_MODEL_PATHS = ("/api/2.0/mlflow/registered-models/create", "/ajax-api/2.0/mlflow/registered-models/create")


def _without_token_cookie(cookie: bytes) -> bytes:
    parts = [part for part in cookie.split(b";") if part.strip().partition(b"=")[0] != COOKIE.encode()]
    return b";".join(parts).strip()

# Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded; Host is rewritten to the MLflow
# server's own, which its security middleware checks against its loopback address.
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
               b"transfer-encoding", b"upgrade", b"host"}


class MlflowProxy:
    def __init__(self, upstream: str, secret: str, identities=None):
        self.client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(600.0, connect=10.0))
        self.secret = secret
        self.identities = identities

    def _headers(self, scope) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP and k not in _TRUSTED]
        for key, value in scope["headers"]:
            if key == b"cookie" and (rest := _without_token_cookie(value)):
                headers.append((b"cookie", rest))
        caller = scope.get("agentwharf.caller")
        # A worker's load credential reads as the platform itself (GET only, see Platform._admit).
        principal = caller.name if caller is not None and caller.via != "load" else None
        headers += [(k.lower().encode(), v.encode()) for k, v in vouching_headers(self.secret, principal).items()]
        return headers

    async def __call__(self, scope, receive, send) -> None:
        creates_model = scope["method"] == "POST" and scope["path"] in _CREATE_MODEL_PATHS
        sent: list[bytes] = []

        async def body():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if creates_model:
                    sent.append(chunk)
                yield chunk
                if not message.get("more_body"):
                    return

        headers = self._headers(scope)
        path = scope.get("raw_path") or scope["path"].encode()
        url = (path + (b"?" + scope["query_string"] if scope["query_string"] else b"")).decode("latin-1")
        request = self.client.build_request(scope["method"], url, headers=headers, content=body())
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as error:
            await send_json(send, 502, b'{"error_code":"TEMPORARILY_UNAVAILABLE","message":"MLflow server unreachable: ' + type(error).__name__.encode() + b'"}')
            return
        if response.status_code in (401, 403) and "json" not in response.headers.get("content-type", ""):
            # MLflow's auth app answers in plain text; clients of this platform get JSON.
            text = (await response.aread()).decode(errors="replace").strip() or "Permission denied"
            await response.aclose()
            code = "UNAUTHENTICATED" if response.status_code == 401 else "PERMISSION_DENIED"
            await send_json(send, response.status_code, orjson.dumps({"error_code": code, "message": f"MLflow: {text}"}))
            return
        if creates_model and response.status_code == 200 and self.identities is not None:
            await self._apply_prefix_grants(b"".join(sent))
        try:
            out_headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _apply_prefix_grants(self, request_body: bytes) -> None:
        import asyncio

        try:
            name = orjson.loads(request_body).get("name")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if isinstance(name, str):
            await asyncio.to_thread(self.identities.apply_prefix_grants, name)

    async def close(self) -> None:
        await self.client.aclose()
