"""Reverse proxy from the platform's base URL to its MLflow server, so MLflow's REST API,
artifact service and UI work unchanged at ``<base>/``. Bodies stream both ways."""

from __future__ import annotations

import httpx

from agentwharf.serving.gateway import send_json

# Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded; Host is rewritten to the MLflow
# server's own, which its security middleware checks against its loopback address.
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
               b"transfer-encoding", b"upgrade", b"host"}


class MlflowProxy:
    def __init__(self, upstream: str):
        self.client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(600.0, connect=10.0))

    async def __call__(self, scope, receive, send) -> None:
        async def body():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                yield message.get("body", b"")
                if not message.get("more_body"):
                    return

        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP]
        path = scope.get("raw_path") or scope["path"].encode()
        url = (path + (b"?" + scope["query_string"] if scope["query_string"] else b"")).decode("latin-1")
        request = self.client.build_request(scope["method"], url, headers=headers, content=body())
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as error:
            await send_json(send, 502, b'{"error_code":"TEMPORARILY_UNAVAILABLE","message":"MLflow server unreachable: ' + type(error).__name__.encode() + b'"}')
            return
        try:
            out_headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def close(self) -> None:
        await self.client.aclose()
