"""Reverse proxy from the platform's base URL to its MLflow server, so MLflow's REST API,
artifact service and UI work unchanged at ``<base>/``. Bodies stream both ways.

The caller's token stops here: MLflow gets the platform's secret and the caller's name instead
(see ``auth.mlflow_plugin``), and decides with its own permissions.

MLflow's errors reach API clients in agentwharf's JSON shape: its auth app answers 401/403 in
plain text and Flask answers an unexpected failure with an HTML page; both are turned into
``{"error_code", "message"}`` (a browser opening a page still gets MLflow's own page). MLflow
silent for longer than the proxy timeout is answered 504, MLflow unreachable 503.
"""

from __future__ import annotations

import html
import re

import httpx
import orjson

from agentwharf.asgi import header, send_error
from agentwharf.auth.gatekeeper import COOKIE
from agentwharf.auth.mlflow_plugin import PRINCIPAL_HEADER, SECRET_HEADER, vouching_headers
from agentwharf.errors import AgentwharfError, DeadlineExceeded, ForeignError, MlflowUnavailable, class_for
from agentwharf.tls import tls_context

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


#: The most of an error page of MLflow's that is read to find its message.
_ERROR_PAGE_BYTES = 64 * 1024
_CODES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
          501: "NOT_IMPLEMENTED", 503: "TEMPORARILY_UNAVAILABLE"}


def _page_text(body: bytes) -> str:
    """The words of an HTML (or plain text) error page, for a JSON message."""
    text = body.decode(errors="replace")
    title = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
    paragraph = re.search(r"<p>(.*?)</p>", text, re.S | re.I)
    parts = [m.group(1) for m in (title, paragraph) if m] or [re.sub(r"<[^>]+>", " ", text)]
    return html.unescape(" ".join(" ".join(parts).split()))[:500] or "no message"


def mlflow_error(status: int, body: bytes) -> AgentwharfError:
    """An error MLflow answered in something other than JSON, as an error of the tree."""
    text = f"MLflow: {_page_text(body)}"
    code = _CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    known = class_for(code, status)
    if known is not None and known.http_status == status:
        return known(text)
    return ForeignError(text, code, status)


def _wants_page(scope) -> bool:
    """A browser navigating to a page (MLflow's UI), as opposed to an API client."""
    return scope["method"] == "GET" and b"text/html" in (header(scope, b"accept") or b"")


class MlflowProxy:
    def __init__(self, upstream: str, secret: str, identities=None, timeout: float = 60.0):
        # ``read`` bounds MLflow's silence (waiting for its answer, or between its chunks);
        # uploads and long downloads that keep moving are not cut.
        self.timeout = timeout
        self.client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(timeout, connect=10.0),
                                        verify=tls_context())
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
        except httpx.TimeoutException:
            await send_error(send, DeadlineExceeded(f"MLflow's server did not answer {scope['method']} {scope['path']} "
                                                    f"within {self.timeout:.0f}s (AGENTWHARF_MLFLOW_PROXY_TIMEOUT)"))
            return
        except httpx.HTTPError as error:
            await send_error(send, MlflowUnavailable(f"MLflow server unreachable: {type(error).__name__}"))
            return
        if response.status_code >= 400 and "json" not in response.headers.get("content-type", "") and not (
                _wants_page(scope) and response.status_code not in (401, 403)):
            try:
                body = await self._read_some(response)
            finally:
                await response.aclose()
            await send_error(send, mlflow_error(response.status_code, body))
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

    @staticmethod
    async def _read_some(response: httpx.Response) -> bytes:
        chunks, size = [], 0
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size >= _ERROR_PAGE_BYTES:
                break
        return b"".join(chunks)

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
